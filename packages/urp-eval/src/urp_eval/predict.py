"""Predictions of a model or a baseline on a build, one row per (sample_id, indicator).

Model backends (``transformers``, ``vllm``) render the training prompts with
:func:`urp_data.schema.render_messages`, generate, parse the 0.0–9.9 score with
:func:`urp_data.schema.parse_answer` and map it back to the indicator's raw unit with the
manifest's score scale (fitted on train). Baselines need no model: ``knn`` is the mean true
value of the k nearest training samples by great-circle distance (GeoLLM's main baseline)
and ``mean`` the training mean. Heavy imports (torch, transformers, vllm) happen only when
their backend is chosen.

With ``--engine ray`` (:mod:`urp_eval.predict_ray`) the model batches and the knn queries run
on a Ray cluster; this module's loop, prompts and writer stay the same.

The output is resumable: pairs already in ``--out`` are skipped, and the file is rewritten
atomically (temporary name, then rename) every ``save_every`` prompts, so an interrupted run
loses at most one checkpoint of work and never leaves a half-written file.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from urp_data.schema import (
    Manifest,
    ScoreScale,
    load_manifest,
    parse_answer,
    render_messages,
    resolve_splits,
    split_path,
)

from urp_eval.metrics import InputError

logger = logging.getLogger(__name__)

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
    save_every: int = field(default=256, metadata={"help": "rewrite the output every N prompts"})
    seed: int = field(default=0, metadata={"help": "random seed for sampling"})
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
        for name in ("samples_per_prompt", "max_new_tokens", "batch_size", "k", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be at least 1")
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


# --------------------------------------------------------------------------- generators


class Generator(Protocol):
    """A model backend: K completions for each (messages, image) prompt."""

    def generate(self, messages: Sequence[list[dict[str, Any]]], images: Sequence[Any]) -> list[list[str]]: ...


class TransformersGenerator:
    """Batched ``model.generate`` with left padding, on CUDA when available."""

    def __init__(self, cfg: PredictConfig) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.torch = torch
        self.cfg = cfg
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.processor = AutoProcessor.from_pretrained(cfg.model, padding_side="left")
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model = AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=dtype).to(self.device).eval()
        torch.manual_seed(cfg.seed)

    def generate(self, messages: Sequence[list[dict[str, Any]]], images: Sequence[Any]) -> list[list[str]]:
        texts = [self.processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
                 for m in messages]
        inputs = self.processor(text=texts, images=list(images), padding=True, return_tensors="pt").to(self.device)
        k = self.cfg.samples_per_prompt
        sampling = {"do_sample": True, "temperature": self.cfg.temperature} if self.cfg.temperature > 0 \
            else {"do_sample": False}
        with self.torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.cfg.max_new_tokens, num_return_sequences=k,
                                      **sampling)
        decoded = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return [decoded[i * k:(i + 1) * k] for i in range(len(texts))]


class VLLMGenerator:
    """vLLM offline inference; vLLM batches internally, ``batch_size`` only sets the checkpoint grain."""

    def __init__(self, cfg: PredictConfig) -> None:
        from transformers import AutoProcessor
        from vllm import LLM, SamplingParams

        self.processor = AutoProcessor.from_pretrained(cfg.model)
        self.llm = LLM(model=cfg.model, seed=cfg.seed, limit_mm_per_prompt={"image": 1})
        self.params = SamplingParams(n=cfg.samples_per_prompt, temperature=cfg.temperature,
                                     max_tokens=cfg.max_new_tokens, seed=cfg.seed)

    def generate(self, messages: Sequence[list[dict[str, Any]]], images: Sequence[Any]) -> list[list[str]]:
        prompts = [{"prompt": self.processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True),
                    "multi_modal_data": {"image": im}} for m, im in zip(messages, images)]
        return [[c.text for c in o.outputs] for o in self.llm.generate(prompts, self.params, use_tqdm=False)]


# --------------------------------------------------------------------------- baselines


def unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Points on the unit sphere for WGS84 (lat, lon) in degrees; chord length orders great-circle distance."""
    la, lo = np.radians(lat), np.radians(lon)
    return np.column_stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)])


def knn_block(n_ref: int) -> int:
    """Query points per distance block of :func:`knn_mean` (a block holds ~20M distances)."""
    return max(1, 20_000_000 // max(n_ref, 1))


def knn_mean(train_lat: np.ndarray, train_lon: np.ndarray, train_values: np.ndarray,
             lat: np.ndarray, lon: np.ndarray, k: int) -> np.ndarray:
    """Mean of ``train_values`` at the k training points nearest each (lat, lon), by great-circle distance.

    Brute force in blocks (bounded memory): evaluation sets are thousands to a few hundred
    thousand points. Fewer than k training points: the mean of all of them.
    """
    ref, q = unit_vectors(train_lat, train_lon), unit_vectors(lat, lon)
    k = min(k, len(ref))
    out = np.empty(len(q))
    block = knn_block(len(ref))
    for s in range(0, len(q), block):
        d = 2.0 - 2.0 * (q[s:s + block] @ ref.T)  # squared chord length, monotone in great-circle distance
        idx = np.argpartition(d, k - 1, axis=1)[:, :k] if k < len(ref) else np.broadcast_to(
            np.arange(len(ref)), (len(d), len(ref)))
        out[s:s + block] = train_values[idx].mean(axis=1)
    return out


# --------------------------------------------------------------------------- output


class PredictionWriter:
    """Holds the predictions file's rows; each :meth:`save` rewrites it atomically."""

    def __init__(self, path: Path, cfg: PredictConfig) -> None:
        self.path, self.cfg = path, cfg
        self.tables: list[pa.Table] = []
        self.rows: list[dict[str, Any]] = []
        self.done: set[tuple[str, str]] = set()
        if path.exists():
            try:
                existing = pq.read_table(path)
            except (OSError, pa.ArrowException) as exc:
                raise InputError(f"{path} exists but is not readable Parquet ({exc}); delete it or choose "
                                 "another --out") from exc
            if not existing.schema.equals(PREDICTION_SCHEMA, check_metadata=False):
                raise InputError(f"{path} exists but is not an urp-eval predictions file; delete it or choose "
                                 "another --out")
            others = {(m, b) for m, b in zip(existing["model"].to_pylist(), existing["backend"].to_pylist())}
            if others - {(cfg.model_id, cfg.backend)}:
                m, b = sorted(others)[0]
                raise InputError(f"{path} holds predictions of {m} ({b}), not {cfg.model_id} ({cfg.backend}); "
                                 "choose another --out to keep them apart")
            self.tables.append(existing)
            self.done = set(zip(existing["sample_id"].to_pylist(), existing["indicator"].to_pylist()))
            logger.info("resuming: %d predictions already in %s", len(self.done), path)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.done.add((row["sample_id"], row["indicator"]))

    def save(self) -> None:
        if self.rows:
            self.tables.append(pa.Table.from_pylist(self.rows, schema=PREDICTION_SCHEMA))
            self.rows = []
        if not self.tables:
            return
        table = pa.concat_tables(self.tables).sort_by([("indicator", "ascending"), ("sample_id", "ascending")])
        self.tables = [table]
        meta = {b"urp_eval": json.dumps({"predict_config": asdict(self.cfg)}).encode()}
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.replace_schema_metadata(meta), tmp)
        os.replace(tmp, self.path)


# --------------------------------------------------------------------------- driver


def _scales(manifest: Manifest, indicators: Sequence[str]) -> dict[str, ScoreScale | None]:
    return {i: manifest.indicators[i].score_scale() for i in indicators}


@contextmanager
def _progress(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr that disappears when stderr is not a terminal."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def _load_split(build: Path, split: str, cfg: PredictConfig, columns: list[str] | None) -> pa.Table:
    path = split_path(build, split)
    if not path.is_file():
        raise InputError(f"{path} not found; is {build} a complete build?")
    table = pq.read_table(path, columns=columns).sort_by("sample_id")
    return table.slice(0, cfg.max_samples) if cfg.max_samples else table


def predict(cfg: PredictConfig) -> Path:
    """Write (or complete) the predictions file of ``cfg``; return its path."""
    build = Path(cfg.data)
    manifest = load_manifest(build)
    indicators = cfg.indicators or list(manifest.indicators)
    unknown = [i for i in indicators if i not in manifest.indicators]
    if unknown:
        raise InputError(f"indicator(s) {', '.join(unknown)} not in {build} (it has "
                         f"{', '.join(manifest.indicators)})")
    scales = _scales(manifest, indicators)
    if cfg.backend in MODEL_BACKENDS:
        missing = [i for i, s in scales.items() if s is None]
        if missing:
            raise InputError(f"the manifest of {build} has no score scale for {', '.join(missing)}, so answers "
                             "cannot be mapped back to raw units; leave them out with --indicators")
    writer = PredictionWriter(Path(cfg.out), cfg)
    with _engine(cfg):
        if cfg.backend in MODEL_BACKENDS:
            _predict_model(cfg, build, manifest, indicators, scales, writer)
        else:
            _predict_baseline(cfg, build, indicators, scales, writer)
    writer.save()
    return Path(cfg.out)


def _engine(cfg: PredictConfig) -> AbstractContextManager[Any]:
    """Ray connected for the run with ``--engine ray`` (an optional extra: imported only then)."""
    if cfg.engine == "local":
        return nullcontext()
    from urp_data.engine_ray import ray_session

    return ray_session(cfg.ray_address)


def _generator(cfg: PredictConfig) -> tuple[Generator, int]:
    """The model backend, and how many prompts to hand it per call (a batch per model replica)."""
    if cfg.engine == "ray":
        from urp_eval.predict_ray import RayGenerator

        ray_gen = RayGenerator(cfg)
        return ray_gen, ray_gen.prompts_per_call
    return (TransformersGenerator if cfg.backend == "transformers" else VLLMGenerator)(cfg), cfg.batch_size


def _knn(cfg: PredictConfig) -> Callable[..., np.ndarray]:
    if cfg.engine == "ray":
        from urp_eval.predict_ray import knn_mean_on_ray

        return knn_mean_on_ray
    return knn_mean


def _todo(table: pa.Table, indicators: Sequence[str], writer: PredictionWriter) -> list[tuple[int, str]]:
    """(row index, indicator) pairs with a finite true value and no prediction yet."""
    ids = table["sample_id"].to_pylist()
    out = []
    for ind in indicators:
        valid = pc.fill_null(pc.is_finite(table[ind]), False).to_pylist()
        out += [(r, ind) for r, (sid, ok) in enumerate(zip(ids, valid)) if ok and (sid, ind) not in writer.done]
    return out


def _predict_baseline(cfg: PredictConfig, build: Path, indicators: Sequence[str],
                      scales: dict[str, ScoreScale | None], writer: PredictionWriter) -> None:
    train = pq.read_table(split_path(build, "train"), columns=["lat", "lon", *indicators])
    for split in resolve_splits(cfg.split):
        table = _load_split(build, split, cfg, ["sample_id", "lat", "lon", *indicators])
        todo = _todo(table, indicators, writer)
        for ind in indicators:
            rows = np.array([r for r, i in todo if i == ind], dtype=np.int64)
            if not len(rows):
                continue
            values = train[ind].to_numpy(zero_copy_only=False).astype(np.float64)  # nulls become NaN
            ok = np.isfinite(values)
            if not ok.any():
                raise InputError(f"the train split of {build} has no value of {ind}; a baseline needs some")
            if cfg.backend == "mean":
                pred = np.full(len(rows), values[ok].mean())
            else:
                lat, lon = (table[c].to_numpy()[rows] for c in ("lat", "lon"))
                pred = _knn(cfg)(train["lat"].to_numpy()[ok], train["lon"].to_numpy()[ok], values[ok], lat, lon,
                                 cfg.k)
            scale = scales[ind]
            score = scale.to_score(pred) if scale else np.full(len(pred), np.nan)
            ids = table["sample_id"].to_pylist()
            for r, p, s in zip(rows.tolist(), pred.tolist(), np.atleast_1d(score).tolist()):
                writer.add({"sample_id": ids[r], "indicator": ind, "split": split,
                            "score": None if np.isnan(s) else s, "prediction": p, "completions": [],
                            "n_parsed": 0, "model": cfg.model_id, "backend": cfg.backend})


def _row_groups(path: Path, max_samples: int | None) -> Iterator[pa.Table]:
    """A split's rows, images included, one Parquet row group at a time (memory stays bounded).

    With ``max_samples``, only the first N samples by sample_id (the same ones whatever the
    file's row order).
    """
    keep = None
    if max_samples:
        ids = pq.read_table(path, columns=["sample_id"])["sample_id"]
        keep = ids.take(pc.sort_indices(ids)[:max_samples])
    pf = pq.ParquetFile(path)
    for g in range(pf.num_row_groups):
        table = pf.read_row_group(g)
        yield table if keep is None else table.filter(pc.is_in(table["sample_id"], value_set=keep))


def _predict_model(cfg: PredictConfig, build: Path, manifest: Manifest, indicators: Sequence[str],
                   scales: dict[str, ScoreScale | None], writer: PredictionWriter) -> None:
    from PIL import Image

    splits = resolve_splits(cfg.split)
    total = sum(len(_todo(_load_split(build, split, cfg, ["sample_id", *indicators]), indicators, writer))
                for split in splits)
    logger.info("%d prompts to generate (%d already done)", total, len(writer.done))
    if not total:
        return
    generator, per_call = _generator(cfg)
    specs = {i: manifest.indicators[i].spec() for i in indicators}
    work = ((split, table, _todo(table, indicators, writer)) for split in splits
            for table in _row_groups(split_path(build, split), cfg.max_samples))
    since_save = 0
    with _progress(total, f"predict {cfg.model_id}") as advance:
        for split, table, todo in work:
            for start in range(0, len(todo), per_call):
                batch = todo[start:start + per_call]
                rows = [table.slice(r, 1).to_pylist()[0] for r, _ in batch]
                images = []
                for row in rows:
                    if not row.get("image") or not row["image"].get("bytes"):
                        raise InputError(f"sample {row['sample_id']} has no image; rebuild the region")
                    images.append(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB"))
                messages = [render_messages(row, ind, spec=specs[ind]) for row, (_, ind) in zip(rows, batch)]
                for row, (_, ind), completions in zip(rows, batch, generator.generate(messages, images)):
                    parsed = [v for v in (parse_answer(c) for c in completions) if v is not None]
                    score = float(np.mean(parsed)) if parsed else None
                    writer.add({"sample_id": row["sample_id"], "indicator": ind, "split": split, "score": score,
                                "prediction": None if score is None else float(scales[ind].to_value(score)),
                                "completions": completions, "n_parsed": len(parsed), "model": cfg.model_id,
                                "backend": cfg.backend})
                advance(len(batch))
                since_save += len(batch)
                if since_save >= cfg.save_every:
                    writer.save()
                    since_save = 0
