"""The typed configs of ``urp-eval``'s commands (predict, bias-report, compare), which its flags are
generated from, and predict's backends and engines.

Kept apart from the modules that do the work (scipy, the report's HTML), so that building the
parser, and refusing a bad command line, costs no more than DuckDB and Arrow."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
from urp_data.contract import resolve_splits

from urp_eval.inputs import group_expression
from urp_eval.metrics import METRICS

BACKENDS = ("transformers", "vllm", "knn", "mean")
MODEL_BACKENDS = ("transformers", "vllm")
ENGINES = ("local", "ray")

PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("indicator", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("score", pa.float64()),  # the model's 0.0-9.9 answer (mean of the parsed samples)
        pa.field("prediction", pa.float64()),  # the score in the indicator's raw unit; null: no answer
        pa.field("completions", pa.list_(pa.string())),  # raw completions, empty for baselines
        pa.field("n_parsed", pa.int32(), nullable=False),  # completions with a parsable answer
        pa.field("model", pa.string(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),
    ]
)
"""One row per (sample_id, indicator); sorted by indicator then sample_id."""


@dataclass
class PredictConfig:
    """``urp-eval predict``: run a model or a baseline on one or more splits of a build."""

    data: str = field(metadata={"help": "build folder written by `urp-data build` (<out>/<region>)"})
    out: str = field(default="predictions.parquet", metadata={"help": "predictions Parquet file; "
                     "pairs already in it are skipped (resume)"})
    backend: str = field(default="transformers", metadata={"help": f"one of {', '.join(BACKENDS)}"})
    model: str | None = field(default=None, metadata={"help": "model folder or hub id (transformers and "
                              "vllm backends)"})
    split: str = field(default="test_unseen", metadata={"help": "split or alias: train, val, test_seen, "
                       "test_unseen, seen, unseen, test, all"})
    indicators: list[str] | None = field(default=None, metadata={"help": "indicators to predict (default: "
                                         "every indicator of the build)"})
    samples_per_prompt: int = field(default=1, metadata={"help": "completions per prompt; the prediction is "
                                    "the mean of the parsable ones (needs temperature > 0 when above 1)"})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature; 0 is greedy decoding"})
    max_new_tokens: int = field(default=512, metadata={"help": "generation budget per completion, in tokens"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generation batch"})
    k: int = field(default=5, metadata={"help": "neighbours of the knn baseline"})
    max_samples: int | None = field(default=None, metadata={"help": "predict only the first N samples of "
                                    "each split (by sample_id), for quick checks"})
    drop: str | None = field(default=None, metadata={"help": "leave image or text out of every prompt, exactly as "
                             "in training (urp_data.contract.render_messages): the modality ablations"})
    save_every: int = field(default=256, metadata={"help": "append a part file every N prompts (the unit of "
                            "resume)"})
    seed: int = field(default=0, metadata={"help": "random seed for sampling"})
    max_model_len: int = field(default=4096, metadata={"help": "vllm: longest prompt plus completion, in tokens "
                               "(ours: a 448 px chip is 256 image tokens, a prompt ~400, plus max_new_tokens); "
                               "vLLM sizes its KV cache for it, and unset it would plan for Qwen2.5-VL's 128k"})
    vllm_enforce_eager: bool = field(default=False, metadata={"help": "vllm: skip torch.compile (and CUDA graphs): "
                                     "starts about a minute sooner on 2 CPU cores, generates more slowly"})
    vllm_kv_cache_gib: float | None = field(default=None, metadata={"help": "vllm: memory for the KV cache, in GiB; "
                                            "unset: 90%% of the GPU's memory on a GPU, 1 GiB on vLLM's CPU build "
                                            "(whose own default reserves 90%% of all RAM)"})
    engine: str = field(default="local", metadata={"help": "local: this process; ray: batches spread over a Ray "
                        "cluster, one model per GPU (per CPU without GPUs); install urp-eval[ray]"})
    ray_address: str | None = field(default=None, metadata={"help": "with --engine ray: the cluster to join "
                                    "(host:port of `ray start --head`); unset: start a local Ray"})

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.backend in MODEL_BACKENDS and not self.model:
            raise ValueError(f"backend={self.backend!r} needs --model PATH_OR_ID")
        if self.backend not in MODEL_BACKENDS and self.model:
            raise ValueError(f"backend={self.backend!r} uses no model; drop --model {self.model}")
        if self.samples_per_prompt > 1 and self.temperature <= 0:
            raise ValueError(f"samples_per_prompt={self.samples_per_prompt} with temperature={self.temperature} "
                             "repeats one greedy completion; set --temperature above 0 (e.g. 1.0)")
        for name in ("samples_per_prompt", "max_new_tokens", "batch_size", "k", "save_every", "max_model_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be at least 1")
        if self.max_new_tokens >= self.max_model_len:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} leaves no room for the prompt in "
                             f"max_model_len={self.max_model_len}; raise max_model_len")
        if self.vllm_kv_cache_gib is not None and self.vllm_kv_cache_gib <= 0:
            raise ValueError(f"vllm_kv_cache_gib={self.vllm_kv_cache_gib}: must be positive, or unset")
        if self.drop not in (None, "image", "text"):
            raise ValueError(f"drop={self.drop!r}: choose image or text (or leave it unset)")
        if self.drop and self.backend not in MODEL_BACKENDS:
            raise ValueError(f"drop={self.drop!r} changes prompts; backend={self.backend!r} reads none")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples={self.max_samples}: must be at least 1, or left unset for all")
        resolve_splits(self.split)
        if self.engine not in ENGINES:
            raise ValueError(f"engine={self.engine!r}: choose one of {', '.join(ENGINES)}")
        if self.engine == "ray" and self.backend == "mean":
            raise ValueError("backend='mean' is one number per indicator; drop --engine ray")
        if self.ray_address is not None and self.engine != "ray":
            raise ValueError(f"ray_address={self.ray_address!r} needs --engine ray")

    @property
    def model_id(self) -> str:
        """What the ``model`` column records."""
        return {"knn": f"knn(k={self.k})", "mean": "train-mean"}.get(self.backend, self.model or "")


def _parse_thresholds(specs: Sequence[str], flag: str, allowed: Sequence[str]) -> list[tuple[str, float]]:
    out = []
    for spec in specs:
        metric, sep, value = spec.partition("=")
        try:
            limit = float(value)
        except ValueError:
            limit = math.nan
        if not sep or metric not in allowed or math.isnan(limit):
            raise ValueError(f"{flag} {spec!r}: expected METRIC=VALUE with METRIC one of {', '.join(allowed)} "
                             "and VALUE a number, e.g. spearman=0.3")
        out.append((metric, limit))
    return out


@dataclass
class ReportConfig:
    """``urp-eval bias-report``: accuracy and geographic bias of predictions on a build."""

    data: str = field(metadata={"help": "build folder written by `urp-data build` (<out>/<region>)"})
    predictions: str = field(metadata={"help": "predictions Parquet written by `urp-eval predict`"})
    split: str = field(default="unseen", metadata={"help": "split or alias: unseen, seen, test_unseen, "
                       "test_seen, test (both: adds the seen - unseen drop), all"})
    group_by: str = field(default="group", metadata={"help": "groups to compare: group (the build's "
                          "geographic group), country, or h3:R (H3 parent cell at resolution R)"})
    out: str = field(default="bias-report", metadata={"help": "output folder"})
    min_group_size: int = field(default=30, metadata={"help": "groups with fewer evaluated samples are "
                                "reported with their intervals but not ranked, tested or named the worst"})
    fail_under: list[str] = field(default_factory=list, metadata={"help": "METRIC=VALUE: exit 1 when the "
                                  "metric of any split and indicator is below VALUE or undefined"})
    max_gap: list[str] = field(default_factory=list, metadata={"help": "METRIC=VALUE: exit 1 when the "
                               "best - worst group gap of any split and indicator exceeds VALUE or is undefined"})
    anchor: str | None = field(default=None, metadata={"help": "indicator whose true values anchor the Manvi "
                               "et al. bias score of every indicator (default, per indicator: another indicator "
                               "that varies, socio-economic first; never the predicted one)"})
    permutations: int = field(default=999, metadata={"help": "permutations of the Moran's I test and of the test "
                              "of each group against the rest (0: no Moran test; Wald tests of groups)"})
    permutation_cells: int = field(default=100_000, metadata={"help": "run the Moran's I permutations only up to "
                                   "this many cells (each costs a pass over all neighbour pairs); above it the "
                                   "normal approximation p_rand stands in"})
    group_test_samples: int = field(default=10_000, metadata={"help": "test whether each group is worse than the "
                                    "rest by permutations only up to this many evaluated samples per split x "
                                    "indicator (each permutation costs a pass over them); above it a Wald test on "
                                    "the intervals' standard errors stands in. Raise it to opt in to permutation "
                                    "tests of larger splits (ours)"})
    seed: int = field(default=0, metadata={"help": "seed of the Moran's I and group-test permutations, the group bootstrap "
                      "and the plot samples"})
    level: float = field(default=0.95, metadata={"help": "confidence level of every interval; groups are "
                         "significantly worse at alpha = 1 - level after Holm's correction"})
    bootstrap: int = field(default=1000, metadata={"help": "replicates of the bootstrap that resamples groups as "
                           "units (across-group figures, seen - unseen drop, bias score; ours)"})
    memory_limit: str = field(default="1GB", metadata={"help": "DuckDB memory limit; larger inputs spill "
                              "to disk (10M samples x 5 indicators run in ~1.2 GB of RSS)"})

    def __post_init__(self) -> None:
        self.splits = resolve_splits(self.split)
        higher = [m.name for m in METRICS.values() if m.direction == "higher"]
        self.under = _parse_thresholds(self.fail_under, "--fail-under", higher)
        self.gaps = _parse_thresholds(self.max_gap, "--max-gap", list(METRICS))
        if self.min_group_size < 1:
            raise ValueError(f"min_group_size={self.min_group_size}: must be at least 1")
        if not 0 < self.level < 1:
            raise ValueError(f"level={self.level}: must be between 0 and 1, e.g. 0.95")
        if self.bootstrap < 100:
            raise ValueError(f"bootstrap={self.bootstrap}: use at least 100 replicates for a percentile interval")
        if self.permutations < 0:
            raise ValueError(f"permutations={self.permutations}: must be 0 (no test) or more")
        if self.group_test_samples < 0:
            raise ValueError(f"group_test_samples={self.group_test_samples}: must be 0 (Wald tests only) or more")
        group_expression(self.group_by)


@dataclass
class CompareConfig:
    """``urp-eval compare A B``: paired bootstrap differences of two reports of the same build and splits."""

    fail_if_worse: list[str] = field(default_factory=list, metadata={"help": "METRIC: exit 3 when B is significantly "
                                     "worse than A on it for any split and indicator (Holm over those cells)"})
    scale: str = field(default="raw", metadata={"help": "raw (the indicators' units, as `metrics`) or score (the "
                       "0.0-9.9 scale, as `metrics_score_scale`; no answer rate)"})
    level: float = field(default=0.95, metadata={"help": "confidence level of the intervals; significant at "
                         "alpha = 1 - level"})
    bootstrap: int = field(default=1000, metadata={"help": "paired bootstrap replicates (ours)"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap (numpy default_rng)"})

    def __post_init__(self) -> None:
        if self.scale not in ("raw", "score"):
            raise ValueError(f"scale={self.scale!r}: choose raw or score")
        unknown = [m for m in self.fail_if_worse if m not in self.metrics()]
        if unknown:
            raise ValueError(f"--fail-if-worse {', '.join(unknown)}: choose from {', '.join(self.metrics())}")
        if not 0 < self.level < 1:
            raise ValueError(f"level={self.level}: must be between 0 and 1, e.g. 0.95")
        if self.bootstrap < 100:
            raise ValueError(f"bootstrap={self.bootstrap}: use at least 100 replicates")

    def metrics(self) -> list[str]:
        return [m for m in METRICS if self.scale == "raw" or m != "answer_rate"]
