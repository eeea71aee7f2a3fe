"""GRPO with geographic-group advantages: a thin subclass of TRL's GRPOTrainer.

TRL normalises each completion's reward within the ``num_generations`` completions of its
prompt. Urban-R1's first mechanism normalises within the *geographic group* instead: with
``advantage_grouping="group"`` every completion of every prompt of one group (``group``
column, e.g. an H3 parent cell) **and one indicator** in the generation batch, across all
processes, shares one baseline (mean) and, with ``scale_rewards="group"``, one standard
deviation. Pools never mix indicators: a population prompt and a GDP prompt of one place have
unrelated reward scales, and pooling them would reward "easy" indicators, not good answers.
A sampler puts runs of exactly ``prompts_per_group`` prompts of one pool next to each other so a
generation batch holds several prompts per pool, never one; groups with a single prompt in the
training split are merged per indicator (:func:`merge_single_prompt_pools`). Pool-wise figures are
logged as ``pools/*`` beside TRL's per-prompt ones. ``advantage_grouping="prompt"`` (the default)
is TRL's behaviour.

Two hooks are overridden, both calling ``super()``: ``_calculate_rewards`` (remembers the
gathered rewards and pool keys, logs per-group rewards) and ``_generate_and_score_completions``
(replaces the advantages when grouping by a column); plus ``_get_train_sampler``, and ``__init__``,
which hands colocated vLLM the processor's image bounds (the one place that relies on TRL internals).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate.utils import gather_object
from torch.utils.data import Sampler
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import RepeatSampler, nanstd

from urp_train.models import vllm_processor_kwargs
from urp_train.rewards import DEFAULT_ACCURACY_SCALE

logger = logging.getLogger(__name__)

PROMPT = "prompt"
INDICATOR = "indicator"  # the dataset column naming each example's indicator (urp_train.dataset)


@dataclass
class URPGRPOConfig(GRPOConfig):
    """TRL's GRPOConfig plus the URP rewards and geographic-group advantages."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy", "format"],
        metadata={"help": "Rewards by name (urp_train.rewards.REWARDS); weight them with reward_weights "
                          "(the total is accuracy + λ·format with reward_weights [1, λ])."},
    )
    accuracy_scale: float = field(
        default=DEFAULT_ACCURACY_SCALE,
        metadata={"help": "Score points at which the accuracy reward max(0, 1 - |pred - target| / scale) is 0."},
    )
    accuracy_scales: dict[str, float] | str | None = field(
        default=None,
        metadata={"help": "Per-indicator accuracy scales overriding accuracy_scale, e.g. '{\"gdp\": 3.0}'."},
    )
    advantage_grouping: str = field(
        default=PROMPT,
        metadata={"help": "'prompt': normalise rewards within each prompt's completions (TRL). A column name "
                          "such as 'group': normalise within each (value of that column, indicator) across "
                          "the whole generation batch and all processes (Urban-R1's group-wise advantages)."},
    )
    prompts_per_group: int = field(
        default=2,
        metadata={"help": "When grouping by a column, prompts of one (group, indicator) placed together in a generation "
                          "batch; must divide generation_batch_size / num_generations."},
    )
    reward_log_column: str | None = field(
        default="group",
        metadata={"help": "Log the mean reward per value of this column (rewards_by_<column>/<value>/...); "
                          "empty to turn off."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.accuracy_scales, str):
            import json

            self.accuracy_scales = json.loads(self.accuracy_scales)
        scales = self.accuracy_scales if isinstance(self.accuracy_scales, dict) else {}
        if self.accuracy_scale <= 0 or any(v <= 0 for v in scales.values()):
            raise ValueError(f"accuracy scales must be positive (got {self.accuracy_scale}, "
                             f"{self.accuracy_scales}); they are score points (0-9.9)")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_funcs):
            raise ValueError(f"reward_weights {self.reward_weights} needs one weight per reward in "
                             f"reward_funcs {self.reward_funcs}")
        self.reward_log_column = self.reward_log_column or None
        if self.advantage_grouping != PROMPT:
            prompts = self.generation_batch_size // self.num_generations
            if self.prompts_per_group < 1 or prompts % self.prompts_per_group:
                raise ValueError(
                    f"prompts_per_group={self.prompts_per_group} must divide the {prompts} prompts of a "
                    f"generation batch (generation_batch_size {self.generation_batch_size} / num_generations "
                    f"{self.num_generations}); change one of them")
            if self.remove_unused_columns:
                raise ValueError(f"advantage_grouping={self.advantage_grouping!r} reads that column from the "
                                 "dataset; set remove_unused_columns to false")


def total_rewards(rewards_per_func: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Each completion's weighted total reward; NaN where no reward applies (TRL's convention)."""
    total = (rewards_per_func * weights.to(rewards_per_func.device)).nansum(dim=1)
    total[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    return total


def pool_stats(rewards_per_func: torch.Tensor, weights: torch.Tensor, pools: Sequence[Hashable],
               num_generations: int) -> dict[str, float]:
    """Figures of the advantage pools of one generation batch, for logging beside TRL's per-prompt ones.

    TRL's ``frac_reward_zero_std`` counts completions whose *prompt's* rewards do not vary; with
    group-wise advantages what matters is whether the *pool's* rewards vary (a pool whose rewards are
    all equal gives zero advantages to every completion in it). ``pools`` keys the N completions, laid
    out as TRL does: completions i and j belong to one prompt when i // num_generations == j // num_generations.
    """
    total = total_rewards(rewards_per_func, weights)
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, key in enumerate(pools):
        members[key].append(i)
    stds = {key: nanstd(total[rows]).item() if len(rows) > 1 else 0.0 for key, rows in members.items()}
    zero = {key: not std > 1e-6 for key, std in stds.items()}  # NaN (nothing scorable) counts as zero
    prompts = sorted(len({i // num_generations for i in rows}) for rows in members.values())
    return {
        "pools/count": float(len(members)),
        "pools/prompts_min": float(prompts[0]),
        "pools/prompts_median": float(statistics.median(prompts)),
        "pools/frac_reward_zero_std": sum(len(members[k]) for k in members if zero[k]) / len(pools),
        "pools/reward_std_mean": float(statistics.fmean(0.0 if math.isnan(v) else v for v in stds.values())),
    }


def grouped_advantages(rewards_per_func: torch.Tensor, weights: torch.Tensor, groups: Sequence[Hashable], *,
                       scale_rewards: str = "group",
                       aggregation: str = "sum_then_normalize") -> torch.Tensor:
    """Advantages with the baseline (and scale) computed within each group of ``groups``.

    ``rewards_per_func`` is (N, F) with NaN where a reward does not apply; ``groups`` gives each
    of the N completions its group key. With ``groups[i] = i // num_generations`` this is TRL's
    own per-prompt computation (same NaN handling, same 1e-4 in the denominator, unbiased std).
    A completion no reward applies to gets advantage 0.
    """
    keys = {g: k for k, g in enumerate(dict.fromkeys(groups))}
    index = torch.tensor([keys[g] for g in groups], device=rewards_per_func.device)
    members = [torch.nonzero(index == k).squeeze(1) for k in range(len(keys))]
    unscorable = torch.isnan(rewards_per_func).all(dim=1)

    def within(x: torch.Tensor, scale: bool) -> torch.Tensor:
        """x minus its group's mean, over its group's std when scale (the std is also returned)."""
        mean, std = torch.empty_like(x), torch.empty_like(x)
        for m in members:
            mean[m] = torch.nanmean(x[m], dim=0)
            std[m] = nanstd(x[m], dim=0) if len(m) > 1 else torch.zeros_like(x[m][0])
        return (x - mean) / (std + 1e-4) if scale else x - mean, std

    w = weights.to(rewards_per_func.device)
    if aggregation == "sum_then_normalize":
        rewards = total_rewards(rewards_per_func, w)
        centred, std = within(rewards, scale=False)
        if scale_rewards == "batch":
            std = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
        advantages = centred / (std + 1e-4) if scale_rewards != "none" else centred
    elif aggregation == "normalize_then_sum":
        normalised, _ = within(rewards_per_func, scale=True)
        rewards = (normalised * w).nansum(dim=1)
        rewards[unscorable] = torch.nan
        std = nanstd(rewards) if rewards.numel() > 1 else torch.zeros(())
        advantages = (rewards - torch.nanmean(rewards)) / (std + 1e-4)
    else:
        raise ValueError(f"unknown multi_objective_aggregation {aggregation!r}")
    return torch.nan_to_num(advantages, nan=0.0)


SMALL_GROUPS = "<groups with one prompt>"
"""The group name of the pool that collects, per indicator, the groups holding a single prompt."""


def merge_single_prompt_pools(keys: Sequence[tuple[Hashable, Hashable]]) -> dict[tuple[Hashable, Hashable],
                                                                                 tuple[Hashable, Hashable]]:
    """Map each (group, indicator) of a training split to the advantage pool it joins.

    A (group, indicator) with one prompt in the split cannot have a group baseline: pooled alone, its
    advantages are plain per-prompt GRPO (the baseline is its own completions' mean). Such groups are
    merged, per indicator, into one pool ``(SMALL_GROUPS, indicator)``: the small places of one
    indicator share a baseline, as a group's places do, and pools still never mix indicators (our
    choice; refusing would stop a global build whose rarest groups hold one sample). When an indicator
    has a single such group, it joins that indicator's smallest other pool. Other keys map to themselves.
    """
    counts = Counter(keys)
    merged: dict[tuple[Hashable, Hashable], tuple[Hashable, Hashable]] = {k: k for k in counts}
    by_indicator: dict[Hashable, list[tuple[Hashable, Hashable]]] = defaultdict(list)
    for key, n in counts.items():
        if n == 1:
            by_indicator[key[1]].append(key)
    for indicator, singles in by_indicator.items():
        if len(singles) > 1:
            target: tuple[Hashable, Hashable] = (SMALL_GROUPS, indicator)
        else:
            others = [k for k in counts if k[1] == indicator and counts[k] > 1]
            if not others:
                raise ValueError(f"indicator {indicator!r} has a single prompt in the training split: no pool can "
                                 "give it a baseline; drop it with --indicators or train on more samples")
            target = min(others, key=lambda k: (counts[k], str(k)))
        for key in singles:
            merged[key] = target
    return merged


class GroupedRepeatSampler(Sampler[int]):
    """TRL's RepeatSampler over an order made of runs of exactly ``prompts_per_group`` prompts of one pool.

    Each epoch: shuffle each pool's examples, cut them into runs of ``prompts_per_group`` and fill the
    last, short run with other prompts of the same pool (so those few are drawn twice that epoch; a pool
    smaller than a run repeats its own prompts),
    shuffle the runs, concatenate. As ``prompts_per_group`` divides the prompts of a generation batch
    (``URPGRPOConfig`` checks it), runs never straddle two batches: every pool in a generation batch
    holds a multiple of ``prompts_per_group`` prompts, never a lone one. ``pools`` gives each example
    its pool (see :func:`merge_single_prompt_pools`); a pool needs at least two distinct examples.
    TRL's RepeatSampler then chunks the order into generation batches and repeats each prompt
    ``mini_repeat_count`` times, exactly as without grouping. Every process draws the same order.
    """

    def __init__(self, pools: Sequence[Hashable], prompts_per_group: int, mini_repeat_count: int,
                 batch_size: int = 1, repeat_count: int = 1, shuffle: bool = True, seed: int | None = None):
        by_pool: dict[Hashable, list[int]] = defaultdict(list)
        for i, pool in enumerate(pools):
            by_pool[pool].append(i)
        lonely = [pool for pool, members in by_pool.items() if len(members) < 2]
        if lonely:
            raise ValueError(f"{len(lonely)} advantage pools hold one example (e.g. {lonely[0]!r}); merge them "
                             "with merge_single_prompt_pools")
        self.by_pool = list(by_pool.values())
        self.prompts_per_group = prompts_per_group
        self.shuffle = shuffle
        self.rng = random.Random(seed)
        length = sum(-(-len(m) // prompts_per_group) * prompts_per_group for m in self.by_pool)
        self.positions = RepeatSampler(range(length), mini_repeat_count, batch_size, repeat_count, shuffle=False)

    def order(self) -> list[int]:
        k = self.prompts_per_group
        runs = []
        for members in self.by_pool:
            members = list(members)
            if self.shuffle:
                self.rng.shuffle(members)
            for start in range(0, len(members), k):
                run = members[start:start + k]
                fill = [m for m in members if m not in run] or run  # a pool smaller than a run repeats itself
                if self.shuffle:
                    self.rng.shuffle(fill)
                runs.append(run + [fill[j % len(fill)] for j in range(k - len(run))])
        if self.shuffle:
            self.rng.shuffle(runs)
        return [i for run in runs for i in run]

    def __iter__(self):
        order = self.order()
        return (order[p] for p in self.positions)

    def __len__(self) -> int:
        return len(self.positions)


@contextlib.contextmanager
def _colocated_vllm_with_image_bounds(processor: Any) -> Iterator[None]:
    """While GRPOTrainer.__init__ runs, give colocated vLLM the training processor's image bounds.

    Depends on TRL 1.16 internals: ``trl.generation.vllm_generation`` builds ``LLM(model=...)`` with no
    processor arguments, so vLLM would resize images with the checkpoint's stored bounds (Qwen2.5-VL-7B:
    3136 to 12,845,056 pixels) while training uses the recipe's, and the two would see different
    image tokens for any chip those bounds treat differently. Server mode takes the same bounds as
    ``--mm-processor-kwargs`` when the server starts (packages/urp-train/README.md).
    """
    module = sys.modules.get("trl.generation.vllm_generation")
    llm = getattr(module, "LLM", None)
    kwargs = vllm_processor_kwargs(processor)
    if module is None or llm is None or not kwargs:
        yield
        return
    module.LLM = functools.partial(llm, mm_processor_kwargs=kwargs)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        module.LLM = llm  # type: ignore[attr-defined]


class URPGRPOTrainer(GRPOTrainer):
    """GRPOTrainer with ``advantage_grouping`` and per-group reward logging (see the module docstring)."""

    args: URPGRPOConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config = kwargs.get("args")
        if config is not None and config.use_vllm and config.vllm_mode == "colocate":
            from urp_train.vllm_cpu import keep_weights_reloadable

            keep_weights_reloadable()  # only acts on vLLM's CPU build (see urp_train.vllm_cpu)
        with _colocated_vllm_with_image_bounds(kwargs.get("processing_class")):
            super().__init__(*args, **kwargs)

    def _group_by(self) -> str | None:
        grouping = getattr(self.args, "advantage_grouping", PROMPT)
        return None if grouping == PROMPT else grouping

    def _get_train_sampler(self, dataset: Any = None) -> Sampler:
        column = self._group_by()
        if column is None:
            return super()._get_train_sampler(dataset)
        dataset = self.train_dataset if dataset is None else dataset
        pools = self._pools
        return GroupedRepeatSampler(
            [pools[key] for key in _pool_keys(dataset, column)], self.args.prompts_per_group,
            mini_repeat_count=self.num_generations,
            batch_size=self.args.generation_batch_size // self.num_generations,
            repeat_count=self.num_iterations * self.args.steps_per_generation,
            shuffle=self.shuffle_dataset, seed=self.args.seed,
        )

    @functools.cached_property
    def _pools(self) -> dict[tuple[Hashable, Hashable], tuple[Hashable, Hashable]]:
        """(group value, indicator) of the training split -> its advantage pool (single-prompt groups merged)."""
        column = self._group_by()
        if column is None or self.train_dataset is None:
            return {}
        pools = merge_single_prompt_pools(_pool_keys(self.train_dataset, column))
        merged = sorted({str(k) for k, v in pools.items() if k != v})
        if merged:
            logger.warning("%d (%s, indicator) pools hold one prompt of the training split and are merged per "
                           "indicator (urp_train.trainer.merge_single_prompt_pools): %s", len(merged), column,
                           ", ".join(merged[:5]) + (" ..." if len(merged) > 5 else ""))
        return pools

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._urp_groups = None
        column = self._group_by()
        if column is not None:  # pools are (group, indicator), merged; same order as the gathered rewards
            keys = [(x[column], x.get(INDICATOR)) for x in inputs]
            self._urp_groups = gather_object([self._pools.get(key, key) for key in keys])
        log_column = getattr(self.args, "reward_log_column", None)
        if log_column is not None and log_column in inputs[0]:
            keys = gather_object([x[log_column] for x in inputs])
            self._log_rewards_by(log_column, keys, rewards_per_func)
        self._urp_rewards_per_func = rewards_per_func
        return rewards_per_func

    def _log_rewards_by(self, column: str, keys: list, rewards_per_func: torch.Tensor) -> None:
        mode = "train" if self.model.training else "eval"
        total = total_rewards(rewards_per_func, self.reward_weights)
        for key in dict.fromkeys(keys):
            rows = torch.tensor([k == key for k in keys], device=total.device)
            self._metrics[mode][f"rewards_by_{column}/{key}/mean"].append(torch.nanmean(total[rows]).item())
            for i, name in enumerate(self.reward_func_names):
                value = torch.nanmean(rewards_per_func[rows, i]).item()
                self._metrics[mode][f"rewards_by_{column}/{key}/{name}"].append(value)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self._group_by() is None:
            return output
        advantages = grouped_advantages(
            self._urp_rewards_per_func, self.reward_weights, self._urp_groups, scale_rewards=self.scale_rewards,
            aggregation=self.multi_objective_aggregation,
        )
        n = len(inputs)
        start = self.accelerator.process_index * n
        output["advantages"] = advantages[start:start + n]
        logged = self._logs["advantages"]  # a bounded deque that ends with TRL's per-prompt advantages
        for _ in range(min(len(advantages), len(logged))):
            logged.pop()
        logged.extend(advantages.tolist())
        mode = "train" if self.model.training else "eval"
        stats = pool_stats(self._urp_rewards_per_func, self.reward_weights, self._urp_groups, self.num_generations)
        for name, value in stats.items():
            self._metrics[mode][name].append(value)
        return output


def _pool_keys(dataset: Any, column: str) -> list[tuple[Hashable, Hashable]]:
    """(value of ``column``, indicator) of every example, in dataset order (reads two columns, no images)."""
    indicator = dataset[INDICATOR] if INDICATOR in dataset.column_names else [None] * len(dataset)
    return list(zip(dataset[column], indicator, strict=True))
