"""Methods as recipes of registered components, one registry per paradigm axis.

Extending grpo_lab is registering a component: ``@ADVANTAGES.register("name", reads=(...))`` on
an estimator, ``@POLICY_LOSSES.register(...)`` on a policy loss, ``@SHAPING.register(...)`` on a
reward shaping, `register_recipe(Recipe(...))` for a method; or naming one by import path in the
YAML (``method: my_pkg.recipes:mine``).
"""

from grpo_lab.methods.advantages import ADVANTAGES, Estimate
from grpo_lab.methods.batch import Batch, StepData
from grpo_lab.methods.data import DATA, FILTERS
from grpo_lab.methods.objectives import OBJECTIVES, POLICY_LOSSES
from grpo_lab.methods.recipes import COMMON_READS, RECIPES, Recipe, check_config, get_recipe, register_recipe
from grpo_lab.methods.registry import Registry, RegistryError
from grpo_lab.methods.rewards import SHAPING

__all__ = ["ADVANTAGES", "COMMON_READS", "DATA", "FILTERS", "OBJECTIVES", "POLICY_LOSSES", "RECIPES", "SHAPING",
           "Batch", "Estimate", "Recipe", "Registry", "RegistryError", "StepData", "check_config", "get_recipe",
           "register_recipe"]
