"""Peak resident memory of a method's RL step, phase by phase (CPU).

Runs `grpo-lab bench`'s step for one method while a thread samples the process's resident set
every 5 ms and files each sample under the phase the step is in: `generate` (sampling),
`ref_logprobs` (the reference model's log-probs), `values` (PPO's critic under no_grad),
`update` (forward, backward and optimizer step of one update) and `other` (everything else: the
loop, scoring, and what stays allocated between phases). It prints one JSON line: the method,
the parameter count, the process's peak (`ru_maxrss`) and the peak of each phase, in MiB. The
phase with the highest peak is where memory work pays.

    python analysis/memory_phases.py --method grpo --hidden 1024 --layers 8 --micro-batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

PHASES = ("generate", "ref_logprobs", "values", "update")


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PhaseMeter:
    """Per-phase peaks of the resident set, from a sampling thread."""

    def __init__(self, interval: float = 0.005):
        self.phase, self.peaks, self.interval = "other", {}, interval
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            rss, phase = resident_mib(), self.phase
            self.peaks[phase] = max(self.peaks.get(phase, 0.0), rss)
            time.sleep(self.interval)

    def wrap(self, cls, name: str) -> None:
        """Make `cls.name` set the phase to `name` while it runs."""
        inner = getattr(cls, name)

        def timed(module, *args, **kwargs):
            outer, self.phase = self.phase, name
            try:
                return inner(module, *args, **kwargs)
            finally:
                self.phase = outer

        setattr(cls, name, timed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="grpo")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--gens", type=int, default=8)
    p.add_argument("--max-new", type=int, default=16)
    p.add_argument("--micro-batch", type=int, default=0)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    from grpo_lab.bench import bench
    from grpo_lab.engine import Engine

    meter = PhaseMeter()
    for name in ("generate", "ref_logprobs", "update", "values"):
        meter.wrap(Engine, name)
    record = bench(method=args.method, hidden=args.hidden, layers=args.layers, prompts=args.prompts,
                   gens=args.gens, max_new=args.max_new, steps=args.steps, warmup=1, threads=args.threads,
                   fixed_length=True, micro_batch=args.micro_batch)
    print(json.dumps({"method": args.method, "params": record["params"], "micro_batch": args.micro_batch,
                      "peak_rss_mib": round(record["peak_mem_mib"]),
                      "phase_peak_mib": {k: round(v) for k, v in meter.peaks.items()}}))


if __name__ == "__main__":
    main()
