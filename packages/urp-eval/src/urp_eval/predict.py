"""Predictions of a model or a baseline on a build, one row per (sample_id, indicator).

Model backends (``transformers``, ``vllm``) render the training prompts with
:func:`urp_data.contract.render_messages`, generate, parse the 0.0–9.9 score with
:func:`urp_data.contract.parse_answer` and map it back to the indicator's raw unit with the
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

import io
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from urp_data.contract import (
    Manifest,
    ScoreScale,
    load_manifest,
    parse_answer,
    render_messages,
    resolve_splits,
    split_path,
)
from urp_data.util.hub import check_model

from urp_eval.baselines import knn_mean
from urp_eval.config import MODEL_BACKENDS, PREDICTION_SCHEMA, PredictConfig
from urp_eval.generators import Generator, make_generator
from urp_eval.inputs import ReportInputError as InputError
from urp_eval.writer import PredictionWriter, read_settings, run_settings

__all__ = ["PREDICTION_SCHEMA", "PredictConfig", "predict", "read_settings"]

logger = logging.getLogger(__name__)

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
    if cfg.model:  # first: a missing model names itself at once, not after minutes of hub retries
        check_model(cfg.model)
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
    from urp_data.ray import ray_session

    return ray_session(cfg.ray_address)


def _generator(cfg: PredictConfig) -> tuple[Generator, int]:
    """The model backend, and how many prompts to hand it per call (a batch per model replica)."""
    if cfg.engine == "ray":
        from urp_eval.predict_ray import RayGenerator

        ray_gen = RayGenerator(cfg)
        return ray_gen, ray_gen.prompts_per_call
    return make_generator(cfg), cfg.batch_size


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
