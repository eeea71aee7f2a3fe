"""``urp-eval predict``'s settings: backends, engines and the typed config the CLI is generated from."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
from urp_data.contract import resolve_splits

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
