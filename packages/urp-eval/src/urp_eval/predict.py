"""Predictions of a model or a baseline on a build, one row per (sample_id, indicator).

Model backends (``transformers``, ``vllm``) render the training prompts with
:func:`urp_data.schema.render_messages`, generate, parse the 0.0–9.9 score with
:func:`urp_data.schema.parse_answer` and map it back to the indicator's raw unit with the
manifest's score scale (fitted on train). Baselines need no model: ``knn`` is the mean true
value of the k nearest training samples by great-circle distance (GeoLLM's main baseline)
and ``mean`` the training mean. Heavy imports (torch, transformers, vllm) happen only when
their backend is chosen.

The output is resumable: finished batches are appended as part files next to ``--out``
(``.<name>.parts/``, each written atomically), which are merged, sorted, into ``--out`` once at
the end; a rerun skips the pairs already done. Memory stays flat in the number of
predictions. A rerun with other settings (build, split, model, backend, sampling, dropped
modality) is refused rather than mixed into the same file.

With ``--engine ray`` (:mod:`urp_eval.predict_ray`) the model batches and the knn queries run
on a Ray cluster; this module's loop, prompts and writer stay the same.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from urp_data.fsutil import atomic_write_table, atomic_write_text, inside, one_line, remove_tree
from urp_data.schema import (
    MANIFEST_NAME,
    Manifest,
    ScoreScale,
    load_manifest,
    parse_answer,
    render_messages,
    resolve_splits,
    split_path,
)
from urp_data.util.hub import check_model

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
    drop: str | None = field(default=None, metadata={"help": "leave image or text out of every prompt, exactly as "
                             "in training (urp_data.schema.render_messages): the modality ablations"})
    save_every: int = field(default=256, metadata={"help": "append a part file every N prompts (the unit of "
                            "resume)"})
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


# --------------------------------------------------------------------------- generators


class Generator(Protocol):
    """A model backend: K completions for each prompt; ``images`` is empty when images are dropped."""

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
        inputs = self.processor(text=texts, images=list(images) or None, padding=True,
                                return_tensors="pt").to(self.device)
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
        prompts: list[dict[str, Any]] = [
            {"prompt": self.processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True)}
            for m in messages]
        for p, im in zip(prompts, images):  # no images with --drop image
            p["multi_modal_data"] = {"image": im}
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


SETTINGS_KEYS = ("build", "split", "model", "backend", "temperature", "max_new_tokens", "samples_per_prompt", "drop")
"""What a predictions file must agree on to be resumed; ``max_samples`` may grow (it only adds samples)."""


def run_settings(cfg: PredictConfig, build: Path) -> dict[str, Any]:
    """The settings that a resumed run must share; ``build`` is the SHA-256 of the build's manifest."""
    digest = hashlib.sha256((build / MANIFEST_NAME).read_bytes()).hexdigest()
    return {"build": digest, "split": cfg.split, "model": cfg.model_id, "backend": cfg.backend,
            "temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens,
            "samples_per_prompt": cfg.samples_per_prompt, "drop": cfg.drop}


def read_settings(path: Path) -> dict[str, Any] | None:
    """The run settings recorded in a predictions file's metadata (None for files without them)."""
    meta = (pq.read_schema(path).metadata or {}).get(b"urp_eval")
    return json.loads(meta).get("settings") if meta else None


def _mismatch(found: dict[str, Any] | None, wanted: dict[str, Any]) -> str | None:
    if found is None:
        return "no recorded settings"
    diff = [f"{k}={found.get(k)!r} (now {wanted[k]!r})" for k in SETTINGS_KEYS if found.get(k) != wanted[k]]
    return ", ".join(diff) or None


class PredictionWriter:
    """Appends finished predictions as part files and merges them into ``path`` once, at :meth:`finish`.

    Parts live in ``.<name>.parts/`` beside ``path`` with the run's settings; both the parts
    and an existing ``path`` are resumed only under the same settings. ``done`` holds the
    (indicator -> sample ids) already predicted before this run, as compact Arrow arrays.
    """

    def __init__(self, path: Path, cfg: PredictConfig, settings: dict[str, Any]) -> None:
        self.path, self.cfg, self.settings = path, cfg, settings
        if path.is_dir():
            raise InputError(f"--out {path} is a folder; give the path of a .parquet file")
        self.parts = path.with_name(f".{path.name}.parts")
        inside(path.parent, self.parts)
        self.rows: list[dict[str, Any]] = []
        self.tables: list[pa.Table] = []
        self.pending = 0
        done: list[pa.Table] = []
        if path.exists():
            try:
                schema = pq.read_schema(path)
            except (OSError, pa.ArrowException) as exc:
                raise InputError(f"{path} exists but is not readable Parquet ({one_line(exc)}); delete it or "
                                 "choose another --out") from exc
            if not schema.remove_metadata().equals(PREDICTION_SCHEMA):
                raise InputError(f"{path} exists but is not an urp-eval predictions file; delete it or choose "
                                 "another --out")
            why = _mismatch(read_settings(path), settings)
            if why:
                raise InputError(f"{path} holds predictions made with other settings ({why}); choose another "
                                 "--out to keep them apart")
            done.append(pq.read_table(path, columns=["indicator", "sample_id"]))
        state = self.parts / "settings.json"
        if self._part_files():
            try:
                found = json.loads(state.read_text())
            except (OSError, ValueError):
                found = None
            why = _mismatch(found, settings)
            if why:
                raise InputError(f"{self.parts} holds unfinished predictions made with other settings ({why}); "
                                 f"delete it or choose another --out")
            done += [pq.read_table(p, columns=["indicator", "sample_id"]) for p in self._part_files()]
        else:  # new, or left by a run that failed before its first batch: nothing to keep
            self.parts.mkdir(parents=True, exist_ok=True)
            atomic_write_text(state, json.dumps(settings))
        table = pa.concat_tables(done) if done else pa.table({"indicator": pa.array([], pa.string()),
                                                               "sample_id": pa.array([], pa.string())})
        self.done = {ind: table.filter(pc.equal(table["indicator"], ind))["sample_id"].combine_chunks()
                     for ind in pc.unique(table["indicator"]).to_pylist()}
        if len(table):
            logger.info("resuming: %d predictions already made for %s", len(table), path)

    def _part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.parquet"))

    def todo_mask(self, ids: pa.Array, indicator: str) -> pa.Array:
        """True where (sample id, indicator) has no prediction yet."""
        done = self.done.get(indicator)
        return pc.invert(pc.is_in(ids, value_set=done)) if done is not None else pa.array(np.ones(len(ids), bool))

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.pending += 1
        if self.pending >= self.cfg.save_every:
            self.flush()

    def add_table(self, table: pa.Table) -> None:
        self.tables.append(table)
        self.pending += table.num_rows
        if self.pending >= self.cfg.save_every:
            self.flush()

    def flush(self) -> None:
        """Append what was added since the last flush as one part file (atomic)."""
        if self.rows:
            self.tables.append(pa.Table.from_pylist(self.rows, schema=PREDICTION_SCHEMA))
        if self.tables:
            n = len(self._part_files())
            atomic_write_table(pa.concat_tables(self.tables), self.parts / f"part-{n:06d}.parquet")
        self.rows, self.tables, self.pending = [], [], 0

    def finish(self) -> None:
        """Merge the existing file and the parts into ``path``, sorted by (indicator, sample_id); drop the parts."""
        self.flush()
        files = ([self.path] if self.path.exists() else []) + self._part_files()
        meta = {"urp_eval": json.dumps({"predict_config": asdict(self.cfg), "settings": self.settings})}
        if len(files) <= 1 and self.path.exists() or not files:  # nothing new: keep it, or write an empty file
            if not files:
                atomic_write_table(PREDICTION_SCHEMA.empty_table(), self.path, meta)
            remove_tree(self.path.parent, self.parts)
            return
        from urp_eval.metrics import connect, parquet_source

        schema = PREDICTION_SCHEMA.with_metadata(meta)
        tmp = self.path.with_name(f".{self.path.name}.merge.tmp")
        con = connect("1GB")  # the sort spills to disk beyond this
        reader = con.sql(f"SELECT * FROM {parquet_source(files)} ORDER BY indicator, sample_id").to_arrow_reader(
            65_536)
        try:
            with pq.ParquetWriter(tmp, schema) as out:
                for batch in reader:
                    out.write_batch(batch.cast(PREDICTION_SCHEMA))
            tmp.replace(self.path)
        finally:
            tmp.unlink(missing_ok=True)
            con.close()
        remove_tree(self.path.parent, self.parts)


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
    if cfg.model:  # a missing model names itself now, not after minutes of hub retries
        check_model(cfg.model)
    writer = PredictionWriter(Path(cfg.out), cfg, run_settings(cfg, build))
    with _engine(cfg):
        if cfg.backend in MODEL_BACKENDS:
            _predict_model(cfg, build, manifest, indicators, scales, writer)
        else:
            _predict_baseline(cfg, build, indicators, scales, writer)
    writer.finish()
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
    ids = table["sample_id"].combine_chunks()
    out = []
    for ind in indicators:
        keep = pc.and_(pc.fill_null(pc.is_finite(table[ind]), False), writer.todo_mask(ids, ind))
        out += [(int(r), ind) for r in np.flatnonzero(keep.to_numpy(zero_copy_only=False))]
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
            score = np.atleast_1d(score)
            n = len(rows)
            writer.add_table(pa.table({
                "sample_id": table["sample_id"].take(pa.array(rows)), "indicator": [ind] * n, "split": [split] * n,
                "score": pa.array(score, mask=np.isnan(score)), "prediction": pred, "completions": [[]] * n,
                "n_parsed": np.zeros(n, np.int32), "model": [cfg.model_id] * n, "backend": [cfg.backend] * n,
            }, schema=PREDICTION_SCHEMA))


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


def _chip(row: dict[str, Any]) -> Any:
    """The sample's chip as a PIL RGB image."""
    from PIL import Image

    if not row.get("image") or not row["image"].get("bytes"):
        raise InputError(f"sample {row['sample_id']} has no image; rebuild the region")
    return Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")


def _predict_model(cfg: PredictConfig, build: Path, manifest: Manifest, indicators: Sequence[str],
                   scales: dict[str, ScoreScale | None], writer: PredictionWriter) -> None:
    splits = resolve_splits(cfg.split)
    total = sum(len(_todo(_load_split(build, split, cfg, ["sample_id", *indicators]), indicators, writer))
                for split in splits)
    logger.info("%d prompts to generate (%d already done)", total, sum(len(d) for d in writer.done.values()))
    if not total:
        return
    generator, per_call = _generator(cfg)
    specs = {i: manifest.indicators[i].spec() for i in indicators}
    to_value = {i: s.to_value for i, s in scales.items() if s is not None}  # predict() checked they all exist
    work = ((split, table, _todo(table, indicators, writer)) for split in splits
            for table in _row_groups(split_path(build, split), cfg.max_samples))
    with _progress(total, f"predict {cfg.model_id}") as advance:
        for split, table, todo in work:
            for start in range(0, len(todo), per_call):
                batch = todo[start:start + per_call]
                rows = [table.slice(r, 1).to_pylist()[0] for r, _ in batch]
                images = [] if cfg.drop == "image" else [_chip(row) for row in rows]
                messages = [render_messages(row, ind, spec=specs[ind], drop=cfg.drop)  # type: ignore[arg-type]
                            for row, (_, ind) in zip(rows, batch)]
                for row, (_, ind), completions in zip(rows, batch, generator.generate(messages, images)):
                    parsed = [v for v in (parse_answer(c) for c in completions) if v is not None]
                    score = float(np.mean(parsed)) if parsed else None
                    writer.add({"sample_id": row["sample_id"], "indicator": ind, "split": split, "score": score,
                                "prediction": None if score is None else float(to_value[ind](score)),
                                "completions": completions, "n_parsed": len(parsed), "model": cfg.model_id,
                                "backend": cfg.backend})
                advance(len(batch))
