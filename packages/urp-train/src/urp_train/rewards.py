"""Reward functions for GRPO on URP prompts, in TRL's signature.

Every reward is a pure function ``f(prompts, completions, **columns) -> list[float | None]``:
TRL passes the dataset columns of each completion's example (``target``, ``indicator``, ...)
as keyword lists. Completions are either strings or conversational (a list of message dicts).
Rewards never evaluate text, never raise on model output and always return finite values in
[0, 1]; ``None`` means "no reward applies" (TRL excludes it from the mean).

The total reward is the weighted sum ``accuracy + λ·format``: TRL computes it from the
per-function rewards with ``reward_weights: [1.0, λ]`` (recipes in ``configs/train/``), and
logs each function's mean separately.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from urp_data.contract import is_well_formed, parse_answer

RewardFunc = Callable[..., list[float | None]]

DEFAULT_ACCURACY_SCALE = 5.0
"""Score points at which the accuracy reward reaches 0 (scores run from 0.0 to 9.9).

The paper asks for partial credit but gives no scale. Half the score range is our choice:
a prediction on the right half of the distribution always earns something (a dense signal
for an untrained policy), while an error of one decile still costs 20% of the reward.
"""


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or the text parts of conversational messages.

    Anything else (None, numbers, malformed messages) reads as the empty string.
    """
    if isinstance(completion, str):
        return completion
    if not isinstance(completion, Sequence):
        return ""
    parts: list[str] = []
    for message in completion:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, Sequence):
            parts.extend(p["text"] for p in content
                         if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return "".join(parts)


def format_reward(prompts: list, completions: list, **_: Any) -> list[float | None]:
    """1.0 for exactly one ``<think>…</think>`` then one ``<answer>`` holding one number, else 0.0."""
    return [1.0 if is_well_formed(completion_text(c)) else 0.0 for c in completions]


def accuracy_reward(prompts: list, completions: list, target: Sequence[float | None], *,
                    indicator: Sequence[str] | None = None, scale: float = DEFAULT_ACCURACY_SCALE,
                    scales: Mapping[str, float] | None = None, **_: Any) -> list[float | None]:
    """Partial credit ``max(0, 1 - |pred - target| / scale)`` on the 0.0–9.9 score scale.

    ``pred`` is the number in the single ``<answer>`` block (0.0 when there is none, several,
    or it is not a finite number). ``scales`` overrides ``scale`` per indicator name. A
    missing or non-finite target gives None (nothing to reward against).
    """
    out: list[float | None] = []
    for i, completion in enumerate(completions):
        t = target[i]
        if t is None or not math.isfinite(t):
            out.append(None)
            continue
        pred = parse_answer(completion_text(completion))
        if pred is None:
            out.append(0.0)
            continue
        s = (scales or {}).get(indicator[i] if indicator is not None else "", scale)
        out.append(max(0.0, 1.0 - abs(pred - t) / s))  # |pred| < 1.8e308 (finite), so this is finite
    return out


REWARDS: dict[str, RewardFunc] = {"accuracy": accuracy_reward, "format": format_reward}
"""Rewards by the name used in configs (``reward_funcs: [accuracy, format]``)."""


class BoundReward:
    """A registry reward with options bound; TRL logs it under ``__name__`` (the registry name)."""

    def __init__(self, name: str, func: RewardFunc, options: dict[str, Any]):
        self.__name__ = name
        self.func = func
        self.options = options

    def __call__(self, prompts: list, completions: list, **columns: Any) -> list[float | None]:
        return self.func(prompts, completions, **columns, **self.options)


def reward_funcs(names: Sequence[str], **options: Any) -> list[RewardFunc]:
    """The named rewards, each bound to the ``options`` among its keyword-only parameters.

    E.g. ``reward_funcs(["accuracy", "format"], scale=3.0)``; TRL logs ``rewards/<name>/mean``.
    """
    funcs: list[RewardFunc] = []
    for name in names:
        if name not in REWARDS:
            raise ValueError(f"unknown reward {name!r}; choose from {', '.join(REWARDS)}")
        func = REWARDS[name]
        params = inspect.signature(func).parameters
        bound = {k: v for k, v in options.items()
                 if k in params and params[k].kind is inspect.Parameter.KEYWORD_ONLY}
        funcs.append(BoundReward(name, func, bound))
    return funcs
