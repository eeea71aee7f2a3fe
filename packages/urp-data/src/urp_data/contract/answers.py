"""Parsing a completion's answer: the score inside ``<answer>`` (linear time on any input)."""

from __future__ import annotations

import math
import re

from urp_data.contract.columns import SCORE_MAX

_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+(?:[eE][-+]?\d+)?"
_NUMBER_RE = re.compile(_NUMBER, re.ASCII)  # ASCII digits only: "６" is not a number here
_TAG_RE = re.compile(r"<(/?)(think|answer)>", re.IGNORECASE)
_BLOCK_RE = re.compile(rf"\s*(?:{_NUMBER})\s*[^<\d]{{0,20}}", re.ASCII)
MAX_ANSWER_CHARS = 200_000
"""Longer completions are not parsed (bounded time on runaway generations)."""

# Answers are found by one scan for the four tags rather than by a lazy ``<answer>(.*?)</answer>``
# search: that search restarts at every unmatched ``<answer>`` and takes quadratic time on a
# completion that repeats the tag. Every function below is linear in the completion's length.


def _tags(completion: str) -> list[tuple[str, int, int]]:
    """The think/answer tags of a completion as (tag as written, start, end), in order."""
    return [(m.group(0), m.start(), m.end()) for m in _TAG_RE.finditer(completion)]


def parse_number(text: str) -> float | None:
    """The first number in ``text`` as a finite float, or None.

    Accepts signs, decimals, exponents and thousands separators ("1,234.5"); rejects
    inf/NaN and overflowing literals such as 1e309. Text only: never evaluated.
    """
    if not isinstance(text, str):
        return None
    m = _NUMBER_RE.search(text)
    if m is None:
        return None
    try:
        value = float(m.group(0).replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _answer_block(completion: str, tags: list[tuple[str, int, int]]) -> str | None:
    opens = [t for t in tags if t[0].lower() == "<answer>"]
    closes = [t for t in tags if t[0].lower() == "</answer>"]
    if len(opens) != 1 or len(closes) != 1 or opens[0][2] > closes[0][1]:
        return None  # none, several (ambiguous) or nested answer blocks
    return completion[opens[0][2]:closes[0][1]]


def parse_answer(completion: str) -> float | None:
    """The score inside the single ``<answer>…</answer>`` of a completion, or None (unparsed).

    None when the completion is not text, is too long, has no answer block, has more than
    one or nested ones (ambiguous), or the block's first number is not finite or lies
    outside the 0.0–SCORE_MAX scale: such answers count as unparsed everywhere (rewards,
    predictions, metrics), so one runaway ``1e300`` cannot dominate a mean. Tags match in
    any case. Linear time in the completion's length.
    """
    if not isinstance(completion, str) or len(completion) > MAX_ANSWER_CHARS:
        return None
    block = _answer_block(completion, _tags(completion))
    value = parse_number(block) if block is not None else None
    return value if value is not None and 0.0 <= value <= SCORE_MAX else None


def is_well_formed(completion: str) -> bool:
    """True iff the completion is exactly ``<think>…</think>`` then ``<answer>`` with one score.

    Lower-case tags, nothing but white space around the two blocks, no other think or
    answer tag in any case, and an answer :func:`parse_answer` accepts. Linear time.
    """
    if not isinstance(completion, str) or len(completion) > MAX_ANSWER_CHARS:
        return False
    tags = _tags(completion)
    if [t[0] for t in tags] != ["<think>", "</think>", "<answer>", "</answer>"]:
        return False
    outside = (completion[:tags[0][1]], completion[tags[1][2]:tags[2][1]], completion[tags[3][2]:])
    if any(part.strip() for part in outside):
        return False
    block = completion[tags[2][2]:tags[3][1]]
    return (_BLOCK_RE.fullmatch(block) is not None and len(_NUMBER_RE.findall(block)) == 1
            and parse_answer(completion) is not None)
