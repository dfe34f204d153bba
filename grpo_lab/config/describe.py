"""Every config key with its default, type and meaning, from the fields' own help text: what
`grpo-lab config [SECTION|KEY]` prints, and the suggestion an unknown key gets."""

from __future__ import annotations

import difflib
from dataclasses import MISSING, fields, is_dataclass
from typing import Optional, get_type_hints

from grpo_lab.config.root import Config


def keys() -> list[dict]:
    """One record per dotted key: key, default, type, help."""
    out = []

    def walk(cls, prefix: str) -> None:
        hints = get_type_hints(cls)
        for f in fields(cls):
            tp = hints[f.name]
            if is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
                continue
            default = f.default if f.default is not MISSING else None
            type_name = str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")
            out.append({"key": prefix + f.name, "default": default, "type": type_name,
                        "help": f.metadata.get("help", "")})

    walk(Config, "")
    return out


def suggest(key: str) -> Optional[str]:
    """The full key closest to `key`: a key of another section with the same last part (`lr` ->
    `optim.lr`), else the closest spelling."""
    known = [k["key"] for k in keys()]
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in known if k.rsplit(".", 1)[-1] == leaf]
    if same_leaf:  # the RL run's own sections first: `lr` is optim.lr more often than sft.lr
        order = ("optim", "loss", "rollout", "advantage", "train", "model", "task")
        return min(same_leaf, key=lambda k: order.index(k.split(".")[0]) if k.split(".")[0] in order else len(order))
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return close[0]
    leaves = difflib.get_close_matches(leaf, [k.rsplit(".", 1)[-1] for k in known], n=1)
    return next((k for k in known if leaves and k.rsplit(".", 1)[-1] == leaves[0]), None)


def describe(query: Optional[str] = None) -> str:
    """Every key (or those of a section, or one key) as `key = default  (type)  meaning` lines."""
    records = keys()
    if query:
        records = [r for r in records if r["key"] == query or r["key"].startswith(query + ".")]
        if not records:
            from grpo_lab.config.fields import ConfigError

            close = suggest(query)
            hint = f"; did you mean '{close}'?" if close else ""
            raise ConfigError(f"no config section or key '{query}'{hint}; `grpo-lab config` lists them all")
    width = max(len(f"{r['key']} = {r['default']!r}") for r in records)
    lines = []
    section = None
    for r in records:
        top = r["key"].split(".")[0] if "." in r["key"] else ""
        if top != section and top:
            lines.append(f"\n{top}:")
        section = top
        head = f"{r['key']} = {r['default']!r}"
        lines.append(f"  {head:<{width}}  ({r['type']})  {r['help']}")
    return "\n".join(lines).lstrip("\n")
