"""Methods as LightningModules: each one a data source, a reward and a gradient coefficient."""

from grpo_lab.algorithms.base import PolicyModule, RewardError, TrainingError
from grpo_lab.algorithms.grpo import GRPO
from grpo_lab.algorithms.dpo import DPO
from grpo_lab.algorithms.ppo import PPO
from grpo_lab.algorithms.rft import RFT, OnlineRFT
from grpo_lab.algorithms.sft import SFTMethod
from grpo_lab.algorithms.offpolicy_grpo import OffPolicyGRPO

MODULES = {"grpo": GRPO, "offpolicy_grpo": OffPolicyGRPO}

MODULES.update(sft=SFTMethod, rft=RFT, online_rft=OnlineRFT, dpo=DPO, ppo=PPO)


def module_class(method: str):
    if method not in MODULES:
        raise ValueError(f"method {method!r} is not implemented; choose one of {', '.join(sorted(MODULES))}")
    return MODULES[method]


__all__ = ["PolicyModule", "GRPO", "OffPolicyGRPO", "MODULES", "module_class", "TrainingError", "RewardError"]
