"""Final answers: extractors that find the answer in a completion, and comparisons against the
reference.

An extractor takes the completion text and returns the answer in canonical form (see
`canonical`), or None when it finds none. Built in (`EXTRACTORS`):

- ``hash``: what follows the last ``####`` (GSM8K): its first number, else its first line.
- ``boxed``: the contents of the last ``\\boxed{...}`` (MATH), braces balanced.
- ``answer_is``: what follows the last "answer is" (a number, else the rest of the line).
- ``last_number``: the last number in the text.
- ``regex``: the last match of ``pattern`` (its first group when it has one).
- ``text``: the whole completion.
- ``auto``: ``hash``, else ``boxed``, else ``answer_is``, else ``last_number``.
- ``gsm8k``: the GSM8K preset's: the number after ``####``, else after "answer is", else the last
  number; numbers only.

A name of the form ``package.module:function`` names an extractor of one's own, called as
``function(text)``.

Comparisons (`COMPARISONS`): ``exact`` (canonical strings equal) and ``numeric`` (both numbers and
``|a - b| <= tolerance * max(1, |b|)``, else exact).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Callable, Optional

from grpo_lab.imports import is_import_path
from grpo_lab.registry import Registry, RegistryError

NUMBER = re.compile(r"(?<!\d)-?\$?\d[\d,]*(?:\.\d+)?")
_ANSWER_IS = re.compile(r"answer is:?\s*", re.IGNORECASE)

Extractor = Callable[..., Optional[str]]
EXTRACTORS: Registry[Extractor] = Registry("answer extractor")


def normalize_number(text: str) -> str | None:
    """Canonical form of a number written as text, or None when it is not one.

    Thousands commas, "$" and a trailing "." are dropped; ``"1,000"`` -> ``"1000"``,
    ``"7.50"`` -> ``"7.5"``, ``"3.0"`` -> ``"3"``.
    """
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    if not re.fullmatch(r"-?\d+(?:\.\d+)?", cleaned):
        return None
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def canonical(text: str | None) -> str | None:
    """An answer in the form answers are compared in: a number normalised (`normalize_number`), any
    other text stripped of surrounding whitespace, "$" and a final "." with inner whitespace
    collapsed; None for nothing."""
    if text is None:
        return None
    text = " ".join(str(text).split()).strip("$ ").rstrip(".")
    if not text:
        return None
    number = normalize_number(text)
    return number if number is not None else text


def extractor(name: str) -> Callable[[Extractor], Extractor]:
    """Decorator that adds an extractor to `EXTRACTORS` under ``name``."""
    return EXTRACTORS.register(name)


def _first_number(text: str) -> str | None:
    match = NUMBER.search(text)
    return normalize_number(match.group()) if match else None


@extractor("hash")
def after_hashes(text: str) -> str | None:
    """What follows the last ``####``: its first number, else its first line."""
    if "####" not in text:
        return None
    rest = text.rsplit("####", 1)[1]
    number = _first_number(rest)
    if number is not None:
        return number
    line = rest.strip().splitlines()
    return canonical(line[0]) if line else None


def boxed_contents(text: str) -> list[str]:
    """The contents of every ``\\boxed{...}`` in ``text``, in order (nested braces kept whole)."""
    found, start = [], 0
    while (at := text.find("\\boxed{", start)) >= 0:
        depth, i = 1, at + len("\\boxed{")
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth:  # unclosed: nothing more to read
            break
        found.append(text[at + len("\\boxed{"): i - 1])
        start = i
    return found


@extractor("boxed")
def last_boxed(text: str) -> str | None:
    """The contents of the last ``\\boxed{...}``."""
    boxes = boxed_contents(text)
    return canonical(boxes[-1]) if boxes else None


@extractor("answer_is")
def answer_is(text: str) -> str | None:
    """What follows the last "answer is": a number, else the rest of that line."""
    parts = _ANSWER_IS.split(text)
    if len(parts) < 2:
        return None
    rest = parts[-1]
    match = NUMBER.match(rest.lstrip())
    if match:
        return normalize_number(match.group())
    line = rest.strip().splitlines()
    return canonical(line[0]) if line else None


@extractor("last_number")
def last_number(text: str) -> str | None:
    """The last number in the text."""
    numbers = NUMBER.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


@extractor("regex")
def by_regex(text: str, pattern: str | None = None) -> str | None:
    """The last match of ``pattern``: its first group when it has groups, else the whole match."""
    if not pattern:
        raise ValueError("the regex extractor needs a pattern (task.pattern)")
    matches = list(re.finditer(pattern, text))
    if not matches:
        return None
    last = matches[-1]
    return canonical(last.group(1) if last.re.groups else last.group(0))


@extractor("text")
def whole_text(text: str) -> str | None:
    """The whole completion."""
    return canonical(text)


@extractor("auto")
def auto(text: str) -> str | None:
    """``####``, else ``\\boxed{}``, else "answer is", else the last number."""
    for find in (after_hashes, last_boxed, answer_is, last_number):
        found = find(text)
        if found is not None:
            return found
    return None


@extractor("gsm8k")
def gsm8k_answer(text: str) -> str | None:
    """The number after the last ``####``; else after the last "answer is"; else the last number in
    the text; None when there is no number."""
    if "####" in text:
        return _first_number(text.rsplit("####", 1)[1])
    stated = re.findall(r"answer is:?\s*(" + NUMBER.pattern + ")", text, re.IGNORECASE)
    if stated:
        return normalize_number(stated[-1])
    return last_number(text)


def get_extractor(name: str, *, pattern: str | None = None, error: type[Exception] = ValueError) -> Callable:
    """The extractor ``name`` (built in or an import path) as a function of the text alone."""
    try:
        fn = EXTRACTORS.get(name).obj
    except RegistryError as exc:
        raise error(str(exc)) from None
    if is_import_path(name):
        return lambda text: canonical(fn(text))
    if name == "regex":
        if not pattern:
            raise error("the regex answer extractor needs a pattern: set task.pattern, e.g. 'Answer: (\\S+)'")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise error(f"task.pattern {pattern!r} is not a regular expression ({exc})") from None
        return lambda text: by_regex(text, pattern)
    return fn


def _as_number(text: str) -> Decimal | None:
    number = normalize_number(text)
    return Decimal(number) if number is not None else None


def exact(answer: str, reference: str, tolerance: float = 0.0) -> bool:
    """Canonical strings equal."""
    return answer == reference


def numeric(answer: str, reference: str, tolerance: float = 1e-6) -> bool:
    """|a - b| <= tolerance * max(1, |b|) when both are numbers; else the strings are equal."""
    a, b = _as_number(answer), _as_number(reference)
    if a is None or b is None:
        return answer == reference
    return abs(float(a) - float(b)) <= tolerance * max(1.0, abs(float(b)))


COMPARISONS: dict[str, Callable[[str, str, float], bool]] = {"exact": exact, "numeric": numeric}
