"""Methods as recipes: a data source, a reward (the task's verifier plus shaping), an advantage
estimator and one or more objectives, each a registered component (DeepSeekMath §5.2: a method
is a data source, a reward function and a per-token gradient coefficient). `RECIPES` is the
paradigm table as the engine runs it; `grpo-lab paradigm` prints it.

`check_config(config)` refuses a key set to a non-default value that no component of the chosen
recipe reads, naming the methods that do read it, and runs each component's own checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from grpo_lab.config import Config, ConfigError
from grpo_lab.methods.advantages import ADVANTAGES
from grpo_lab.methods.iterative import SCHEDULES
from grpo_lab.methods.objectives import OBJECTIVES, POLICY_LOSSES, Correction
from grpo_lab.methods.rewards import LEARNED_REWARDS, SHAPING
from grpo_lab.methods.reward_model import RewardPairs  # noqa: F401 (registers the reward_model components)
from grpo_lab.methods.sources import DATA, FILTERS
from grpo_lab.registry import Entry, Registry, RegistryError

# keys every recipe reads: the run, the task, the model and its warm start, the sampler's shape and
# temperature (evaluation samples too), the optimizer and the update loop
COMMON_READS = ("name", "method", "seed", "task.*", "model.*", "sft.*", "train.*", "tracking.*", "optim.*",
                "rollout.prompts_per_step", "rollout.group_size", "rollout.max_new_tokens", "rollout.temperature",
                "rollout.top_p")
GROUP_ESTIMATORS = ("group", "rloo", "process", "reinforce_pp")


@dataclass(frozen=True)
class Recipe:
    """A method: the components of each stage of the engine's step, by registered name."""

    name: str
    data: str  # DATA
    objectives: tuple[str, ...]  # OBJECTIVES, in the order they update within a minibatch
    advantage: Optional[str] = None  # ADVANTAGES; None: no advantage stage
    estimators: tuple[str, ...] = ()  # advantage.estimator chooses among these (the first is the default)
    learned_reward: Optional[str] = None  # LEARNED_REWARDS: a model's score in place of the task's reward
    shaping: tuple[str, ...] = ()  # SHAPING, applied in order
    refill: Optional[str] = None  # FILTERS: dynamic sampling
    correction: bool = False  # importance correction of the policy objective (offpolicy.correction)
    reward: str = "Rule"  # what scores completions, for the paradigm table
    gradient_coefficient: str = ""
    doc: str = ""
    schedules: tuple[str, ...] = ()  # SCHEDULES: between steps (iterative RL, reference sync)
    evaluates: bool = True  # evaluate on held-out prompts before the first step, on the schedule and at the end
    shuffles: bool = True  # each epoch takes the step's rows in a fresh random order (else in the order drawn)
    dropout: bool = False  # the policy trains in training mode (dropout on); RL keeps it in eval mode

    def estimator(self, config: Config) -> Optional[str]:
        """The advantage estimator this recipe runs with under `config`."""
        return config.advantage.estimator if self.estimators else self.advantage

    def entries(self, config: Config, *, every_choice: bool = False) -> list[Entry]:
        """The registered components of this recipe under `config` (or every one it can choose)."""
        out = [DATA.get(self.data)] + [OBJECTIVES.get(o) for o in self.objectives]
        out += [LEARNED_REWARDS.get(self.learned_reward)] if self.learned_reward else []
        out += [SHAPING.get(s) for s in self.shaping]
        if self.refill:
            out.append(FILTERS.get(self.refill))
        estimators = self.estimators if every_choice and self.estimators else [self.estimator(config)]
        out += [ADVANTAGES.get(e) for e in estimators if e is not None]
        if "policy" in self.objectives:
            losses = POLICY_LOSSES.names() if every_choice else [config.loss.objective]
            out += [POLICY_LOSSES.get(name) for name in losses]
        if self.correction:
            out.append(Entry("correction", Correction, "correction", Correction.reads, Correction.check))
        out += [SCHEDULES.get(s) for s in self.schedules]
        return out

    def reward_of(self, config: Config) -> str:
        """What scores completions under `config`: "Model" where the recipe's learned reward replaces the
        task's (`reward.model`), else the recipe's own (`reward`)."""
        learned = self.learned_reward and LEARNED_REWARDS.get(self.learned_reward).trait("replaces_reward")(config)
        return "Model" if learned else self.reward

    def has_reference(self, config: Config) -> bool:
        """Whether a run of this recipe under `config` keeps a reference model (a KL term, DPO)."""
        parts = [OBJECTIVES.get(o) for o in self.objectives] + [SHAPING.get(s) for s in self.shaping]
        return any(entry.trait("needs_reference")(config) for entry in parts)

    def reads(self, config: Config, *, every_choice: bool = False) -> tuple[str, ...]:
        keys = list(COMMON_READS)
        for entry in self.entries(config, every_choice=every_choice):
            keys.extend(entry.reads)
        if self.estimators:
            keys.append("advantage.estimator")
        return tuple(dict.fromkeys(keys))


RECIPES: Registry = Registry("method")


def register_recipe(recipe: Recipe) -> Recipe:
    """Add a recipe to `RECIPES` under its name (for a recipe of your own; or name it by import path)."""
    RECIPES.register(recipe.name)(recipe)
    return recipe


ONLINE = dict(data="online", learned_reward="reward_model", shaping=("overlong", "kl"), correction=True,
              schedules=("iterative", "reference_sync"))
register_recipe(Recipe("sft", "references", ("supervised",), gradient_coefficient="1",
                       doc="SFT continued on the task's references of P x G prompts per step"))
register_recipe(Recipe("rft", "rft_pool", ("supervised",), gradient_coefficient="I(o)",
                       doc="SFT loss on correct completions sampled once from the SFT policy"))
register_recipe(Recipe("online_rft", "online", ("supervised",), advantage="indicator", gradient_coefficient="I(o)",
                       doc="SFT loss on the correct ones of P x G samples of the current policy",
                       learned_reward="reward_model", schedules=("iterative",)))
register_recipe(Recipe("dpo", "preference_pairs", ("dpo",), gradient_coefficient="sigma(beta (h- - h+)) on o+ and o-",
                       doc="DPO on (correct, wrong) pairs sampled from the SFT policy, the SFT model as reference",
                       schedules=("reference_sync",)))
register_recipe(Recipe("ppo", objectives=("policy", "value"), advantage="gae", gradient_coefficient="A_t (GAE)",
                       doc="clipped surrogate with GAE advantages from a critic, plus the critic's value loss",
                       **ONLINE))
for _name, _doc in (("grpo", "clipped surrogate with group-relative advantages (outcome, RLOO, process, REINFORCE++)"),
                    ("offpolicy_grpo", "GRPO from a behaviour policy (stale, low-precision, noisy) with replay "
                                       "and importance correction: the offpolicy section")):
    register_recipe(Recipe(_name, objectives=("policy",), estimators=GROUP_ESTIMATORS, refill="zero_variance",
                           gradient_coefficient="A_i,t + beta (pi_ref / pi_theta - 1)", doc=_doc, **ONLINE))

register_recipe(Recipe("warm_start", "reference_draws", ("supervised",), gradient_coefficient="1",
                       doc="the SFT warm start (runs.warm_start): the SFT loss on reference completions drawn with "
                           "replacement, with dropout, nothing evaluated", evaluates=False, shuffles=False,
                       dropout=True))
register_recipe(Recipe("reward_model", "reward_pairs", ("bradley_terry",), reward="Rule (pairs)",
                       gradient_coefficient="-",
                       doc="a Bradley-Terry reward model (the policy's trunk, a scalar head at the last completion "
                           "token) on preference pairs: policy samples labelled by the verifier, or a dataset's"))


def get_recipe(name: str) -> Recipe:
    """The recipe registered as `name` (or named by import path); ConfigError if there is none."""
    try:
        recipe = RECIPES.get(name).obj
    except RegistryError as exc:
        raise ConfigError(f"method is {name!r}: {exc}") from None
    if not isinstance(recipe, Recipe):
        raise ConfigError(f"method {name!r} names a {type(recipe).__name__}, not a grpo_lab.methods.Recipe")
    return recipe


def covers(reads: tuple[str, ...], key: str) -> bool:
    return any(key == r or (r.endswith(".*") and key.startswith(r[:-1])) for r in reads)


def unread(recipe: Recipe, config: Config, key: str, value) -> str:
    """The message for a key `recipe` does not read under `config`: which choice would read it, or
    which methods do."""
    other = [e for e in recipe.entries(config, every_choice=True) if covers(e.reads, key)]
    if other:
        chosen = {"advantage estimator": "advantage.estimator", "policy loss": "loss.objective"}
        return (f"{key} is set ({value!r}) but method {recipe.name} reads it only with "
                + " or ".join(f"{chosen.get(e.kind, e.kind)}: {e.name}" for e in other))
    readers = [r.name for r in (RECIPES.get(n).obj for n in RECIPES.names())
               if covers(r.reads(config, every_choice=True), key)]
    who = f"the methods that read it: {', '.join(readers)}" if readers else "no method reads it"
    return f"{key} is set ({value!r}) but method {recipe.name} never reads it; {who}"


def check_config(config: Config) -> Recipe:
    """Refuse settings the method cannot run with: a non-default key none of its components reads,
    an advantage estimator it does not use, and whatever a component's own check refuses. Returns
    the recipe."""
    recipe = get_recipe(config.method)
    check_task(config)
    estimator = config.advantage.estimator
    for key, registry in (("advantage.estimator", ADVANTAGES), ("loss.objective", POLICY_LOSSES)):
        name = estimator if key == "advantage.estimator" else config.loss.objective
        try:
            registry.get(name)
        except RegistryError as exc:
            raise ConfigError(f"{key} is {name!r}: {exc}") from None
    if recipe.estimators and estimator not in recipe.estimators and builtin(ADVANTAGES.get(estimator)):
        raise ConfigError(f"advantage.estimator is {estimator}; method {recipe.name} uses one of "
                          f"{', '.join(recipe.estimators)}, or an estimator of your own" +
                          (" (gae needs a critic: use method: ppo)" if estimator == "gae" else ""))
    if not recipe.estimators and estimator not in ("group", recipe.advantage):
        uses = f"computes its advantages with {recipe.advantage}" if recipe.advantage else "has no advantage estimator"
        raise ConfigError(f"advantage.estimator is {estimator} but method {recipe.name} {uses}; remove it"
                          + ("" if recipe.advantage else " or use method: grpo"))
    reads = recipe.reads(config)
    defaults = Config().flatten()
    for key, value in config.flatten().items():
        if key == "advantage.estimator" or value == defaults.get(key) or covers(reads, key):
            continue
        raise ConfigError(unread(recipe, config, key, value))
    for entry in recipe.entries(config):
        if entry.check is not None:
            entry.check(config)
        key = entry.trait("moves_reference")(config) if entry.kind == SCHEDULES.what else None
        if key and not recipe.has_reference(config):
            raise ConfigError(f"{key} moves the reference model, but method {recipe.name} keeps none here "
                              "(no KL term); set loss.kl_beta > 0 or remove it")
    return recipe


def builtin(entry: Entry) -> bool:
    """Whether a component is one of grpo_lab's own (a recipe that chooses its estimator takes any of
    one's own, but none of the built-ins made for other recipes: gae needs PPO's critic)."""
    return getattr(entry.obj, "__module__", "").startswith("grpo_lab.")


def check_task(config: Config) -> None:
    """Resolve the task and the reward functions the config names (importing those named by import
    path), so a name that does not resolve stops the run before anything is built."""
    from grpo_lab.tasks import TaskError, task_factory
    from grpo_lab.tasks.rewards import check_rewards

    try:
        task_factory(config.task.name)
        check_rewards(config.task.rewards)
    except TaskError as exc:
        raise ConfigError(str(exc)) from None


def by_section(keys: list[str], config: Config) -> str:
    """Dotted keys grouped by section: `critic.*` for a whole section, `loss.{a, b}` for part of one."""
    sections: dict[str, list[str]] = {}
    for key in keys:
        section, _, leaf = key.partition(".")
        sections.setdefault(section, []).append(leaf)
    every = {}
    for key in config.flatten():
        section, _, leaf = key.partition(".")
        every.setdefault(section, []).append(leaf)
    out = []
    for section, leaves in sections.items():
        if sorted(leaves) == sorted(every.get(section, [])):
            out.append(f"{section}.*")
        else:
            out.append(f"{section}.{leaves[0]}" if len(leaves) == 1 else f"{section}.{{{', '.join(leaves)}}}")
    return "; ".join(out)


def paradigm_table(config: Config | None = None) -> str:
    """Every registered recipe as a markdown table: its components by stage and the keys it reads
    beyond the ones every method reads (what `grpo-lab paradigm` prints)."""
    config = config or Config()
    rows = ["| method | data source | reward | advantage | objectives | gradient coefficient | its own keys |",
            "|---|---|---|---|---|---|---|"]
    for name in RECIPES.names():
        recipe = RECIPES.get(name).obj
        source = DATA.get(recipe.data).doc or recipe.data
        reward = " + ".join([recipe.reward_of(config)] + [s for s in recipe.shaping if s != "reward_model"])
        advantage = " \\| ".join(recipe.estimators) if recipe.estimators else (recipe.advantage or "-")
        keys = [k for k in recipe.reads(config, every_choice=True) if k not in COMMON_READS]
        cells = [f"`method: {name}`", source, reward, advantage, ", ".join(recipe.objectives),
                 recipe.gradient_coefficient, by_section(keys, config) or "-"]
        rows.append("| " + " | ".join(c.replace("|", "\\|") if i not in (3,) else c
                                      for i, c in enumerate(cells)) + " |")
    return "\n".join(rows)


__all__ = ["COMMON_READS", "RECIPES", "Recipe", "check_config", "get_recipe", "register_recipe"]
