"""Methods as recipes of registered components, one registry per paradigm axis.

Extending grpo_lab is registering a component: ``@ADVANTAGES.register("name", reads=(...))`` on
an estimator, ``@POLICY_LOSSES.register(...)`` on a policy loss, ``@SHAPING.register(...)`` on a
reward shaping, `register_recipe(Recipe(...))` for a method; or naming one by import path in the
YAML (``method: my_pkg.recipes:mine``). Every component gets a `Step` (`grpo_lab.methods.step`);
the Protocol of each axis is in `grpo_lab.methods.protocols`.
"""

from grpo_lab.methods.advantages import ADVANTAGES
from grpo_lab.methods.batch import Batch, StepData
from grpo_lab.methods.iterative import SCHEDULES
from grpo_lab.methods.objectives import OBJECTIVES, POLICY_LOSSES
from grpo_lab.methods.protocols import (
    AdvantageEstimator, DataSource, Estimate, Filter, Objective, PolicyLoss, RewardFunction, Schedule, Shaped, build,
)
from grpo_lab.methods.recipes import COMMON_READS, RECIPES, Recipe, check_config, get_recipe, register_recipe
from grpo_lab.methods.rewards import LEARNED_REWARDS, SHAPING
from grpo_lab.methods.sources import DATA, FILTERS
from grpo_lab.methods.step import ReferenceUpdate, ScheduleResult, Step, budget_of
from grpo_lab.registry import Registry, RegistryError

AXES = {registry.what: registry for registry in (DATA, LEARNED_REWARDS, SHAPING, FILTERS, ADVANTAGES, OBJECTIVES,
                                                 POLICY_LOSSES, SCHEDULES, RECIPES)}

__all__ = ["ADVANTAGES", "AXES", "COMMON_READS", "DATA", "FILTERS", "LEARNED_REWARDS", "OBJECTIVES", "POLICY_LOSSES",
           "RECIPES", "SCHEDULES", "SHAPING", "AdvantageEstimator", "Batch", "DataSource", "Estimate", "Filter",
           "Objective", "PolicyLoss", "Recipe", "ReferenceUpdate", "Registry", "RegistryError", "RewardFunction",
           "Schedule", "ScheduleResult", "Shaped", "Step", "StepData", "budget_of", "build", "check_config",
           "get_recipe", "register_recipe"]
