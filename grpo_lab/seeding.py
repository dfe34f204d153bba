"""Named random streams: every random draw of a run comes from a generator seeded by
(run seed, stream, parts), so that streams never share draws and adding draws to one stream
changes nothing in another.

Changing the evaluation schedule does not change training (evaluation has its own stream), and a
resumed run needs only the generators' states and the step counter: the prompts of step s are a
pure function of (seed, DATA_ORDER, epoch).
"""

from __future__ import annotations

from enum import IntEnum, unique
from typing import Optional

import numpy as np
import torch


@unique
class Stream(IntEnum):
    SAMPLING = 1  # the tokens of training rollouts
    UPDATES = 2  # minibatch permutations
    DATA_ORDER = 3  # the shuffle of each epoch over the training prompts (parts: epoch)
    EVALUATION = 4  # sampled evaluation completions
    EXTRA_PROMPTS = 5  # dynamic sampling's refills (parts: step, round)
    SAMPLER_NOISE = 6  # noise on a behaviour policy's logits
    REPLAY = 7  # which replayed groups join a step
    POOL_ORDER = 8  # the shuffle of an offline pool (parts: first step of the pool)
    REWARD_PAIRS = 9  # a reward model's pairs: prompts, samples, flipped labels, replay (parts: iteration, what)
    REWARD_ORDER = 10  # the order reward-model pairs are trained in (parts: iteration, epoch)


def stream_seed(seed: int, stream: Stream, *parts: int) -> int:
    """A 32-bit seed for (run seed, stream, parts), from numpy's SeedSequence."""
    return int(np.random.SeedSequence([seed, int(stream), *parts]).generate_state(1)[0])


def generator(seed: int, stream: Stream, *parts: int, device: Optional[str] = None) -> torch.Generator:
    """A torch generator seeded for (run seed, stream, parts)."""
    gen = torch.Generator(device=device) if device is not None else torch.Generator()
    return gen.manual_seed(stream_seed(seed, stream, *parts))
