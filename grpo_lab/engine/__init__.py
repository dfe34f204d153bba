"""The engine that runs every method's recipe, and the method classes bound to it."""

from grpo_lab.engine.classes import (
    DPO, GRPO, MODULES, PPO, RFT, SFT, OffPolicyGRPO, OnlineRFT, RewardModeling, module_class,
)
from grpo_lab.engine.engine import Engine
from grpo_lab.errors import RewardError, TrainingError

__all__ = ["DPO", "GRPO", "MODULES", "PPO", "RFT", "SFT", "Engine", "OffPolicyGRPO", "OnlineRFT", "RewardError",
           "RewardModeling",
           "TrainingError", "module_class"]
