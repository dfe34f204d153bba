"""CPU threads per process: each grpo-lab process that computes takes its share of this machine's
cores, so that two runs side by side do not each spin torch's default threads against the other
(on 2 cores that makes both many times slower).

A process that computes registers itself (a file named by its pid in a per-user folder of the
temporary directory) and gets `cores // live processes` threads, at least 1; it looks again every
few seconds and follows the count as processes start and stop. `train.threads` (or `--threads`)
set to a number fixes the count instead: use that for bit-identical reruns, since the number of
threads can change the rounding of float sums.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

RECHECK_S = 5.0  # how often a running process looks at the count again


def cores() -> int:
    """The cores this process may run on (its affinity mask: taskset and cgroup limits count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def registry() -> Path:
    return Path(tempfile.gettempdir()) / f"grpo_lab-{os.getuid()}" / "processes"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def live_processes() -> int:
    """How many registered grpo-lab processes are alive (the files of dead ones are removed)."""
    folder = registry()
    count = 0
    for entry in folder.glob("*") if folder.exists() else []:
        if entry.name.isdigit() and _alive(int(entry.name)):
            count += 1
        else:
            entry.unlink(missing_ok=True)
    return count


class ThreadShare:
    """This process's share of the cores while it computes (a context manager; nested uses in one
    process register it once). `fixed` > 0 sets that many threads instead of following the count."""

    _depth = 0

    def __init__(self, fixed: int = 0):
        self.fixed = fixed
        self.last_check = 0.0
        self.threads: Optional[int] = None

    def __enter__(self) -> "ThreadShare":
        if ThreadShare._depth == 0:
            registry().mkdir(parents=True, exist_ok=True)
            (registry() / str(os.getpid())).touch()
        ThreadShare._depth += 1
        self.update(force=True)
        return self

    def __exit__(self, *exc) -> None:
        ThreadShare._depth -= 1
        if ThreadShare._depth == 0:
            (registry() / str(os.getpid())).unlink(missing_ok=True)

    def update(self, force: bool = False) -> int:
        """Recount the processes (at most every RECHECK_S seconds) and set this process's threads."""
        if self.fixed:
            if self.threads != self.fixed:
                self.apply(self.fixed)
            return self.fixed
        now = time.monotonic()
        if force or now - self.last_check >= RECHECK_S:
            self.last_check = now
            self.apply(max(1, cores() // max(live_processes(), 1)))
        return self.threads

    def apply(self, threads: int) -> None:
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        self.threads = threads


def callback(share: ThreadShare):
    """A Lightning callback that keeps `share` current before every training batch."""
    import lightning as L

    class FollowShare(L.Callback):
        def on_train_batch_start(self, *args, **kwargs) -> None:
            share.update()

    return FollowShare()
