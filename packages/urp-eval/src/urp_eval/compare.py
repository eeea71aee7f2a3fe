"""``urp-eval compare A B``: the paired difference B − A of each headline metric, with its interval and p-value.

Both reports must come from the same build (manifest SHA-256) and the same splits: otherwise
the difference mixes a model change with a data change, and the command refuses in one line.
The prediction files the reports name are read again (their SHA-256 must still match) and
joined on the (sample, indicator) pairs both hold with a true value; a paired bootstrap then
resamples those samples, the same draw for A and B, so the interval reflects only the models'
difference. Spearman's ρ is re-ranked in every replicate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from urp_data.util.versions import file_sha256

from urp_eval import resample
from urp_eval.config import CompareConfig
from urp_eval.inputs import ReportInputError, connect
from urp_eval.metrics import METRICS
from urp_eval.report import SUMMARY_NAME
from urp_eval.significance import holm
from urp_eval.sql import literal, parquet_source, quote

BLOCK = 2_000_000
"""Resampled values held at once per metric (replicates × samples), to bound memory on large splits."""


def load_summary(path: str | Path) -> dict[str, Any]:
    """A ``summary.json`` (or the report folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / SUMMARY_NAME
    if not p.is_file():
        raise ReportInputError(f"{p} not found; pass a report folder or its summary.json")
    try:
        summary = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportInputError(f"{p} is not JSON ({exc})") from exc
    if not isinstance(summary, dict) or "metrics" not in summary:
        raise ReportInputError(f"{p} is not a summary.json written by `urp-eval bias-report`")
    return summary


def check_comparable(a: dict[str, Any], b: dict[str, Any], pa: str | Path, pb: str | Path) -> None:
    """Refuse two reports of different builds or splits (one line naming both)."""
    for s, p in ((a, pa), (b, pb)):
        if "inputs" not in s:
            raise ReportInputError(f"{p} has no inputs section; rerun `urp-eval bias-report` to compare it")
    ma, mb = a["inputs"]["manifest"]["sha256"], b["inputs"]["manifest"]["sha256"]
    if ma != mb:
        raise ReportInputError(f"{pa} and {pb} are reports of different builds (manifest SHA-256 {ma[:12]} and "
                               f"{mb[:12]}); compare reports of one build")
    if a["splits"] != b["splits"]:
        raise ReportInputError(f"{pa} and {pb} are reports of different splits ({', '.join(a['splits'])} and "
                               f"{', '.join(b['splits'])}); compare reports of the same --split")


def _predictions(summary: dict[str, Any], path: str | Path) -> Path:
    info = summary["inputs"]["predictions"]
    p = Path(info["path"])
    if not p.is_file() or file_sha256(p) != info["sha256"]:
        raise ReportInputError(f"{p}, the predictions of {path}, is missing or changed since the report; rerun "
                               "`urp-eval bias-report` on it")
    return p


def paired_rows(a: dict[str, Any], b: dict[str, Any], pred_a: Path, pred_b: Path,
                scale: str) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per (split, indicator): truth and the two predictions (NaN: unanswered) of the pairs both files hold."""
    from urp_data.contract import SCORE_MAX, load_manifest

    build = Path(a["inputs"]["build"])
    manifest = load_manifest(build)
    splits = parquet_source([Path(i["path"]) for i in a["inputs"]["splits"].values()])
    con = connect("1GB")
    in_scale = f"score BETWEEN 0 AND {SCORE_MAX}"  # the report's rule (urp_eval.inputs.joined)
    valid = (f"CASE WHEN {in_scale} THEN score END" if scale == "score" else
             f"CASE WHEN isfinite(prediction) AND (score IS NULL OR {in_scale}) THEN prediction END")
    out = {}
    for ind in [i for i in a["indicators"] if i in b["indicators"]]:
        rows = con.execute(f"""
            SELECT s.split, s.{quote(ind)} AS truth, pa.v AS a, pb.v AS b FROM {splits} s
            JOIN (SELECT sample_id, {valid} AS v FROM {parquet_source([pred_a])} WHERE indicator = {literal(ind)}) pa
              USING (sample_id)
            JOIN (SELECT sample_id, {valid} AS v FROM {parquet_source([pred_b])} WHERE indicator = {literal(ind)}) pb
              USING (sample_id)
            WHERE isfinite(s.{quote(ind)}) ORDER BY s.split, s.sample_id""").fetchnumpy()
        split = np.asarray(rows["split"], dtype=object)
        truth = np.asarray(rows["truth"], dtype=float)
        if scale == "score":
            score_scale = manifest.indicators[ind].score_scale()
            if score_scale is None:
                continue
            truth = np.asarray(score_scale.to_score(truth), dtype=float)
        va, vb = (np.ma.filled(np.ma.asarray(rows[k], dtype=float), np.nan) for k in ("a", "b"))
        for s in sorted(set(split)):
            sel = split == s
            out[(s, ind)] = (truth[sel], va[sel], vb[sel])
    return out


def _constant(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask, x, -np.inf).max(-1) <= np.where(mask, x, np.inf).min(-1)


def _masked_corr(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pearson's r along the last axis over the entries where ``mask`` holds (NaN when a side is constant:
    the centred values of a constant are rounding noise, not a correlation)."""
    n = mask.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mx = np.where(mask, x, 0).sum(-1) / n
        my = np.where(mask, y, 0).sum(-1) / n
        dx, dy = np.where(mask, x - mx[..., None], 0), np.where(mask, y - my[..., None], 0)
        r = (dx * dy).sum(-1) / np.sqrt((dx * dx).sum(-1) * (dy * dy).sum(-1))
    return np.where(_constant(x, mask) | _constant(y, mask), np.nan, r)


def sample_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """The :data:`METRICS` along the last axis, as the report defines them (NaN in ``p``: unanswered)."""
    from scipy.stats import rankdata

    mask = ~np.isnan(p)
    na = mask.sum(-1)
    e = np.where(mask, p - y, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ybar = np.where(mask, y, 0).sum(-1) / na
        sst = np.where(mask, (y - ybar[..., None]) ** 2, 0).sum(-1)
        sse = (e * e).sum(-1)
        out = {"answer_rate": na / y.shape[-1], "pearson": _masked_corr(p, y, mask),
               "spearman": _masked_corr(rankdata(np.where(mask, p, np.nan), axis=-1, nan_policy="omit"),
                                        rankdata(np.where(mask, y, np.nan), axis=-1, nan_policy="omit"), mask),
               "r2": np.where(sst > 0, 1 - sse / sst, np.nan), "rmse": np.sqrt(sse / na),
               "mae": np.abs(e).sum(-1) / na, "mean_error": e.sum(-1) / na}
    return {k: np.where(np.isfinite(v), v, np.nan) for k, v in out.items()}


def _badness(metric: str, v: np.ndarray) -> np.ndarray:
    return {"higher": -v, "lower": v, "zero": np.abs(v)}[METRICS[metric].direction]


def paired_bootstrap(y: np.ndarray, a: np.ndarray, b: np.ndarray, metrics: list[str], replicates: int,
                     level: float, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Per metric: A, B, B − A, its percentile interval and the two-sided bootstrap p-value of B's badness − A's."""
    n = len(y)
    diffs: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    worse: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    block = max(1, min(replicates, BLOCK // max(n, 1)))
    for start in range(0, replicates, block):
        idx = rng.integers(0, n, (min(block, replicates - start), n))
        ma, mb = sample_metrics(y[idx], a[idx]), sample_metrics(y[idx], b[idx])
        for m in metrics:
            diffs[m].append(mb[m] - ma[m])
            worse[m].append(_badness(m, mb[m]) - _badness(m, ma[m]))
    pa, pb = sample_metrics(y, a), sample_metrics(y, b)
    out = []
    for m in metrics:
        d, w = np.concatenate(diffs[m]), np.concatenate(worse[m])
        w = w[np.isfinite(w)]
        lo, hi = resample.percentile_interval(d, level)
        p = (min(1.0, 2 * (min((w <= 0).sum(), (w >= 0).sum()) + 1) / (len(w) + 1)) if len(w) else np.nan)
        out.append({"metric": m, "n": n, "a": float(pa[m]), "b": float(pb[m]), "diff": float(pb[m] - pa[m]),
                    "diff_lo": lo, "diff_hi": hi, "p": p,
                    "b_worse": bool(np.isfinite(pb[m] - pa[m]) and _badness(m, pb[m]) > _badness(m, pa[m]))})
    return out


@dataclass
class Comparison:
    """Paired differences per split × indicator × metric, and the metrics on which B is significantly worse."""

    rows: list[dict[str, Any]]
    failed: list[str]
    header: str


def compare(path_a: str | Path, path_b: str | Path, cfg: CompareConfig) -> Comparison:
    """The paired comparison of two reports (B − A); refuses reports of different builds or splits."""
    a, b = load_summary(path_a), load_summary(path_b)
    check_comparable(a, b, path_a, path_b)
    data = paired_rows(a, b, _predictions(a, path_a), _predictions(b, path_b), cfg.scale)
    if not data:
        raise ReportInputError(f"{path_a} and {path_b} share no sample with a true value to compare")
    rng = np.random.default_rng(cfg.seed)
    rows = []
    for (split, ind), (y, va, vb) in data.items():
        for r in paired_bootstrap(y, va, vb, cfg.metrics(), cfg.bootstrap, cfg.level, rng):
            rows.append({"split": split, "indicator": ind, **r})
    for m in cfg.metrics():
        cells = [r for r in rows if r["metric"] == m]
        adjusted = holm(np.array([np.nan if r["p"] is None else r["p"] for r in cells], dtype=float))
        for r, p_adj in zip(cells, adjusted):
            r["p_holm"] = float(p_adj)
            r["significant"] = bool(p_adj < 1 - cfg.level)
            r["significantly_worse"] = r["significant"] and r["b_worse"]
    failed = sorted({f"B is significantly worse than A on {r['metric']} of {r['indicator']} on {r['split']} "
                     f"(B - A = {r['diff']:.4g}, Holm p = {r['p_holm']:.3g})"
                     for r in rows if r["metric"] in cfg.fail_if_worse and r["significantly_worse"]})
    header = (f"A: {path_a}\nB: {path_b}\n{cfg.scale} scale; paired bootstrap over the shared samples, "
              f"{cfg.bootstrap} replicates, seed {cfg.seed}; {cfg.level:.0%} intervals of B - A; p two-sided, "
              "Holm-corrected per metric over split x indicator; * B significantly worse, + B significantly better")
    return Comparison(rows, failed, header)


def render(c: Comparison) -> str:
    """The comparison as an aligned text table."""
    head = ["split", "indicator", "metric", "n", "A", "B", "B - A", "interval", "p (Holm)", ""]
    cells = [head] + [[r["split"], r["indicator"], r["metric"], str(r["n"]), _text(r["a"]), _text(r["b"]),
                       _text(r["diff"]), f"[{_text(r['diff_lo'])}, {_text(r['diff_hi'])}]", _text(r["p_holm"]),
                       ("*" if r["significantly_worse"] else "+" if r["significant"] else "")] for r in c.rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) if i < 3 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return c.header + "\n" + "\n".join(lines)


def _text(v: Any) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)
