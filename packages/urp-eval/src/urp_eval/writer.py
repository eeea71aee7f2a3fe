"""The resumable predictions file: part files, the run's settings, one sorted merge at the end."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from urp_data.contract import MANIFEST_NAME
from urp_data.util.fs import atomic_write_table, atomic_write_text, inside, one_line, remove_tree

from urp_eval.config import PREDICTION_SCHEMA, PredictConfig
from urp_eval.inputs import ReportInputError as InputError

logger = logging.getLogger(__name__)


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
        from urp_eval.inputs import connect
        from urp_eval.sql import parquet_source

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
