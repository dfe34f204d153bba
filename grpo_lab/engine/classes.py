"""Each method as a LightningModule a user can import and hand to a Trainer: a thin class that binds
the engine to its recipe (`grpo_lab.methods.RECIPES`). None inherits from another method."""

from __future__ import annotations

from grpo_lab.engine.engine import Engine


class SFT(Engine):
    """SFT continued on the task's reference completions (DeepSeekMath Table 10, first row)."""

    recipe_name = "sft"


class RFT(Engine):
    """Offline rejection-sampling fine-tuning: the SFT loss on correct completions sampled once (Eq. 10)."""

    recipe_name = "rft"


class OnlineRFT(Engine):
    """Online RFT: the SFT loss on the correct ones of each step's samples of the current policy."""

    recipe_name = "online_rft"


class DPO(Engine):
    """DPO on (correct, wrong) pairs of the policy's own samples (Eq. 13-14; Rafailov et al.)."""

    recipe_name = "dpo"


class PPO(Engine):
    """PPO with a learned critic: clipped surrogate with GAE advantages plus a clipped value loss."""

    recipe_name = "ppo"


class GRPO(Engine):
    """GRPO (DeepSeekMath §4.1, Eq. 3) and its variants: group-relative advantages, clipped surrogate."""

    recipe_name = "grpo"


class OffPolicyGRPO(Engine):
    """GRPO from a behaviour policy that is not the learner, with replay and importance correction."""

    recipe_name = "offpolicy_grpo"


class RewardModeling(Engine):
    """A Bradley-Terry reward model on preference pairs (InstructGPT §3.5): the policy's trunk with a scalar
    head read at the last completion token, trained on -log sigmoid(r(x, y+) - r(x, y-))."""

    recipe_name = "reward_model"


MODULES = {cls.recipe_name: cls for cls in (SFT, RFT, OnlineRFT, DPO, PPO, GRPO, OffPolicyGRPO, RewardModeling)}


def module_class(method: str) -> type[Engine]:
    """The LightningModule class of `method`: its method class, or the engine itself for a recipe
    registered by the user or named by import path."""
    return MODULES.get(method, Engine)
