"""Time the bias report's metric stage in DuckDB against pandas + scipy and against Polars.

    uv run python benchmarks/bias_report.py                 # 10M cells x 5 indicators, ~1000 groups
    uv run python benchmarks/bias_report.py --cells 1000000 # smaller, while developing

Generates (with DuckDB, seeded) one split file of N cells with 5 indicators (skewed counts
with ~10% zeros, rounded so values tie) and a predictions file of 5N rows in
``urp_eval.predict.PREDICTION_SCHEMA`` (noisy, rounded, ~5% unanswered), grouped into ~1000
groups of very unequal size. Each engine then runs in its own subprocess, so its peak
resident memory (``ru_maxrss`` of the child) is its own:

* ``duckdb``: the report's metric stage exactly as ``urp-eval bias-report`` runs it
  (``metrics.open_inputs`` with its input checks, ``group_metrics`` with the bias score,
  ``bias_summary``, ``samples_with_truth``), under the report's default ``memory_limit``.
* ``pandas``: the same figures (n, answer rate, Pearson, Spearman, R², RMSE, MAE, mean
  error per indicator × group and overall, then worst / gap / worst decile across ranked
  groups) with ``pandas.read_parquet``, ``merge`` and a ``groupby`` loop calling scipy.
* ``polars``: the same figures in idiomatic Polars (lazy scans, one unpivoted frame, a
  ``group_by().agg()`` of expressions, average ranks for Spearman), what a performance-minded
  user would write instead of SQL.

* ``baseline``: the same whole report from another copy of urp-eval's source (``--baseline-src``,
  e.g. ``git archive`` of an earlier commit), run just before ``report``, for a before/after
  ratio taken in one run on one machine.
* ``report``: the whole ``urp-eval bias-report`` (``report.bias_report`` with its defaults:
  metrics, Moran's I over H3 ring-1 neighbours with its randomisation p-value, plots, HTML,
  summary and groups files), for its time and peak memory against the 2 GB target.

The cells are real, distinct resolution-9 H3 cells (children of one base cell, so most have
all six neighbours), as Moran's I needs. DuckDB's per-group Spearman, R² and bias scores are
compared with pandas' and Polars' at the end, and Polars' gaps and worst deciles with pandas'.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INDICATORS = [f"ind{i}" for i in range(5)]
ENGINES = ("duckdb", "baseline", "report", "polars", "pandas")  # ascending peak memory: ru_maxrss of children is a running maximum


def h3_cell_sql(i: str, res: int = 9, base_cell: int = 20) -> str:
    """SQL for the ``i``-th resolution-``res`` H3 cell (hex) under one hexagonal base cell.

    The index is built from its bit fields (mode 1, resolution, base cell, then one 3-bit digit
    0-6 per resolution from the base-7 digits of ``i``, unused digits 7), so it is a valid cell
    for ``i < 7**res``.
    """
    digits = " | ".join(f"((({i} // {7 ** (res - k)}) % 7)::UBIGINT << {3 * (15 - k)})" for k in range(1, res + 1))
    fixed = (1 << 59) | (res << 52) | (base_cell << 45) | ((1 << (3 * (15 - res))) - 1)
    return f"printf('%015x', {fixed}::UBIGINT | {digits})"
MIN_GROUP = 30


def generate(out: Path, cells: int, groups: int, seed: float = 0.42) -> None:
    """Write ``<out>/bench/test_unseen.parquet``, its manifest and ``<out>/preds.parquet``."""
    import duckdb
    from urp_data.contract import IndicatorInfo, Manifest
    from urp_eval.predict import PREDICTION_SCHEMA

    build = out / "bench"
    build.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SELECT setseed({seed})")
    truth = ", ".join(
        f"CASE WHEN random() < 0.1 THEN 0.0 WHEN random() < 0.02 THEN NULL "
        f"ELSE round(exp(random() * {4 + k}), 1) END AS {name}" for k, name in enumerate(INDICATORS))
    con.execute(f"""COPY (
        SELECT printf('s%09d', i) AS sample_id, {h3_cell_sql("i")} AS h3_cell, -25 + random() AS lat,
               -54 + random() AS lon, 'bench' AS region,
               printf('g%04d', floor({groups} * pow(random(), 2))::INT) AS "group", 'PRY' AS country,
               'test_unseen' AS split, {truth}
        FROM range({cells}) t(i)) TO '{build / "test_unseen.parquet"}' (FORMAT parquet)""")
    manifest = Manifest(region="bench", resolution=8,
                        indicators={k: IndicatorInfo(k, k, "", "synthetic", "cell") for k in INDICATORS})
    (build / "manifest.json").write_text(manifest.to_json())
    con.execute(f"""COPY (
        SELECT sample_id, indicator, split,
               CASE WHEN answered THEN round(random() * 9.9, 1) END AS score,
               CASE WHEN answered THEN round(truth * (0.5 + random()), 0) END AS prediction,
               []::VARCHAR[] AS completions, answered::INT AS n_parsed, 'bench-model' AS model,
               'bench' AS backend
        FROM (SELECT *, random() > 0.05 AS answered FROM (UNPIVOT (
            SELECT sample_id, split, {', '.join(INDICATORS)} FROM read_parquet('{build / "test_unseen.parquet"}'))
            ON {', '.join(INDICATORS)} INTO NAME indicator VALUE truth))
        ORDER BY indicator, sample_id) TO '{out / "preds.parquet"}' (FORMAT parquet)""")
    assert [f.name for f in PREDICTION_SCHEMA] == [r[0] for r in con.execute(
        f"DESCRIBE SELECT * FROM read_parquet('{out / 'preds.parquet'}')").fetchall()]


def run_duckdb(out: Path) -> dict:
    from urp_eval.inputs import connect, open_inputs, samples_with_truth
    from urp_eval.metrics import bias_summary, group_metrics
    from urp_eval.report import ReportConfig

    con = connect(next(f.default for f in dataclasses.fields(ReportConfig) if f.name == "memory_limit"))
    indicators = open_inputs(con, out / "bench", ["test_unseen"], out / "preds.parquet", "group")
    group_metrics(con, indicators, MIN_GROUP, anchor=INDICATORS[0])
    bias_summary(con)
    samples_with_truth(con, indicators)
    return {"rows": con.execute("SELECT indicator, grp, spearman, r2 FROM metrics").fetchall(),
            "bias_score": dict(con.execute("SELECT indicator, bias_score FROM bias_scores").fetchall())}


def run_report(out: Path) -> dict:
    from urp_eval.report import ReportConfig, bias_report

    report = bias_report(ReportConfig(data=str(out / "bench"), predictions=str(out / "preds.parquet"),
                                      split="unseen", out=str(out / "report"), min_group_size=MIN_GROUP,
                                      anchor=INDICATORS[0]))
    moran = report.summary["moran"]["test_unseen"]
    return {"moran": {i: {k: moran[i][k] for k in ("n_cells", "n_linked", "I", "p_rand", "p_sim")} for i in moran}}


def run_pandas(out: Path) -> dict:
    import numpy as np
    import pandas as pd
    from scipy import stats

    samples = pd.read_parquet(out / "bench" / "test_unseen.parquet", columns=["sample_id", "group", *INDICATORS])
    preds = pd.read_parquet(out / "preds.parquet", columns=["sample_id", "indicator", "prediction", "score"])

    def metrics(df: pd.DataFrame, ind: str) -> dict:
        a = df[df.prediction.notna()]
        y, p = a[ind].to_numpy(), a.prediction.to_numpy()
        r = {"n": len(df), "answer_rate": len(a) / len(df), "pearson": np.nan, "spearman": np.nan, "r2": np.nan,
             "rmse": np.nan, "mae": np.nan, "mean_error": np.nan}
        if len(a):
            e = p - y
            r.update(rmse=float(np.sqrt(np.mean(e ** 2))), mae=float(np.mean(np.abs(e))), mean_error=float(e.mean()))
        if len(a) >= 2 and np.ptp(y) > 0 and np.ptp(p) > 0:
            r["pearson"] = stats.pearsonr(p, y).statistic
            r["spearman"] = stats.spearmanr(p, y).statistic
            r["r2"] = 1 - float(np.sum((p - y) ** 2)) / float(np.sum((y - y.mean()) ** 2))
        return r

    rows, bias_score, bias = [], {}, {}
    for ind in INDICATORS:
        anchor = INDICATORS[0]
        cols = ["sample_id", "group", ind] if ind == anchor else ["sample_id", "group", ind, anchor]
        j = samples[samples[ind].notna()][cols].merge(
            preds[preds.indicator == ind][["sample_id", "prediction", "score"]], on="sample_id")
        overall = metrics(j, ind)
        b = j[j.score.notna() & j[anchor].notna()]  # Manvi et al. bias score, as the report computes it
        bias_score[ind] = (stats.spearmanr(b.score, b[anchor]).statistic
                           * np.mean(np.abs(b.score - b.score.mean())) * overall["answer_rate"])
        per = {g: metrics(df, ind) for g, df in j.groupby("group")}
        ranked = pd.DataFrame([dict(v, group=g) for g, v in per.items() if v["n"] >= MIN_GROUP])
        for name in ("answer_rate", "pearson", "spearman", "r2", "rmse", "mae", "mean_error"):
            v = ranked[name].dropna()
            if len(v):  # worst group, gap, 10th percentile
                bias[(ind, name)] = (ranked.group[v.idxmin()], v.max() - v.min(), np.percentile(v, 10))
        rows += [(ind, g, v["spearman"], v["r2"]) for g, v in [*per.items(), (None, overall)]]
    return {"rows": rows, "bias_score": bias_score,
            "bias": [[i, m, w, gap, dec] for (i, m), (w, gap, dec) in bias.items()]}


def run_polars(out: Path) -> dict:
    """The same figures as ``run_pandas`` in idiomatic Polars: lazy scans of the needed columns,
    one long (indicator, sample) frame, one ``group_by().agg()`` of expressions per level.
    """
    import polars as pl

    anchor = INDICATORS[0]
    samples = (pl.scan_parquet(out / "bench" / "test_unseen.parquet")
               .select("sample_id", "group", *INDICATORS)
               .with_columns(pl.col(anchor).alias("anchor_truth"))
               .unpivot(on=INDICATORS, index=["sample_id", "group", "anchor_truth"], variable_name="indicator",
                        value_name="truth")
               .filter(pl.col("truth").is_not_null()))
    preds = pl.scan_parquet(out / "preds.parquet").select("sample_id", "indicator", "prediction", "score")
    joined = samples.join(preds, on=["sample_id", "indicator"])

    answered = pl.col("prediction").is_not_null()
    y, p = pl.col("truth").filter(answered), pl.col("prediction").filter(answered)
    defined = (answered.sum() >= 2) & ((y.max() - y.min()) > 0) & ((p.max() - p.min()) > 0)
    metrics = [
        pl.len().alias("n"),
        (answered.sum() / pl.len()).alias("answer_rate"),
        pl.when(defined).then(pl.corr(p, y)).alias("pearson"),
        pl.when(defined).then(pl.corr(p.rank("average"), y.rank("average"))).alias("spearman"),
        pl.when(defined).then(1 - ((p - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()).alias("r2"),
        ((p - y) ** 2).mean().sqrt().alias("rmse"),
        (p - y).abs().mean().alias("mae"),
        (p - y).mean().alias("mean_error"),
    ]
    names = ["answer_rate", "pearson", "spearman", "r2", "rmse", "mae", "mean_error"]
    per_group = joined.group_by("indicator", "group").agg(metrics)
    overall = joined.group_by("indicator").agg(metrics)
    # Manvi et al. bias score on the anchor indicator's truth, as the report computes it.
    s, a = pl.col("score"), pl.col("anchor_truth")
    both = s.is_not_null() & a.is_not_null()
    bias_score = joined.group_by("indicator").agg(
        (pl.corr(s.filter(both).rank("average"), a.filter(both).rank("average"))
         * (s.filter(both) - s.filter(both).mean()).abs().mean()).alias("bias"))
    bias = (per_group.filter(pl.col("n") >= MIN_GROUP)
            .unpivot(on=names, index=["indicator", "group"], variable_name="metric")
            .filter(pl.col("value").is_not_null() & pl.col("value").is_not_nan())
            .group_by("indicator", "metric")
            .agg(pl.col("group").sort_by("value").first().alias("worst"),
                 (pl.col("value").max() - pl.col("value").min()).alias("gap"),
                 pl.col("value").quantile(0.1, interpolation="linear").alias("decile")))
    per_group, overall, bias_score, bias = pl.collect_all([per_group, overall, bias_score, bias])
    rates = dict(overall.select("indicator", "answer_rate").iter_rows())
    rows = [*per_group.select("indicator", "group", "spearman", "r2").iter_rows(),
            *overall.select("indicator", pl.lit(None).alias("group"), "spearman", "r2").iter_rows()]
    return {"rows": rows, "bias_score": {i: b * rates[i] for i, b in bias_score.iter_rows()},
            "bias": [list(r) for r in bias.iter_rows()]}


def child(engine: str, out: Path, cells: int, groups: int) -> None:
    if engine == "generate":
        generate(out, cells, groups)
        return
    t0 = time.perf_counter()
    result = {"duckdb": run_duckdb, "baseline": run_report, "report": run_report, "polars": run_polars,
              "pandas": run_pandas}[engine](out)
    result["seconds"] = time.perf_counter() - t0
    (out / f"{engine}.json").write_text(json.dumps(result))


def spawn(engine: str, out: Path, *extra: str, src: Path | None = None) -> resource.struct_rusage:
    """Run ``--child engine`` and return its own resource usage (wait4), peak RSS included.

    Every child starts from this small parent: Linux carries ru_maxrss across fork and exec,
    so a parent that had generated the data itself would lend its peak to every child.
    """
    env = dict(os.environ)
    if src is not None:  # the baseline's urp_eval package shadows the installed one
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    proc = subprocess.Popen([sys.executable, __file__, "--child", engine, "--out", str(out), *extra], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{engine} child failed with exit code {proc.returncode}")
    return usage


def measure(engine: str, out: Path, baseline_src: Path | None) -> dict:
    usage = spawn(engine, out, src=baseline_src if engine == "baseline" else None)
    result = json.loads((out / f"{engine}.json").read_text())
    result["peak_gib"] = usage.ru_maxrss / 2**20  # KiB on Linux
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000_000, help="samples (H3 cells) in the split")
    parser.add_argument("--groups", type=int, default=1000, help="geographic groups")
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES),
                        help="what to run (default: all)")
    parser.add_argument("--baseline-src", type=Path, help="folder holding another urp_eval package (e.g. "
                        "`git archive REV packages/urp-eval/src`), timed as engine `baseline`")
    parser.add_argument("--child", choices=["generate", *ENGINES], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.out, args.cells, args.groups)
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        t0 = time.perf_counter()
        spawn("generate", out, "--cells", str(args.cells), "--groups", str(args.groups))
        print(f"generated {args.cells:,} cells x {len(INDICATORS)} indicators, ~{args.groups} groups "
              f"in {time.perf_counter() - t0:.1f} s")
        if "baseline" in args.engines and not args.baseline_src:
            parser.error("--engines baseline needs --baseline-src")
        results = {engine: measure(engine, out, args.baseline_src) for engine in ENGINES if engine in args.engines}
        for engine, r in results.items():
            stage = "whole report" if engine in ("report", "baseline") else "metric stage"
            print(f"{engine:7s} {stage} {r['seconds']:7.1f} s   peak RSS {r['peak_gib']:6.2f} GiB")
        if {"report", "baseline"} <= set(results):
            print(f"report / baseline: {results['report']['seconds'] / results['baseline']['seconds']:.2f}x the time, "
                  f"{results['report']['peak_gib'] / results['baseline']['peak_gib']:.2f}x the peak memory "
                  "(target: <= 2x the time)")
        if "report" in results:
            for ind, m in results["report"]["moran"].items():
                print(f"  Moran's I {ind}: {m['n_cells']:,} cells, {m['n_linked']:,} with neighbours, "
                      f"I={m['I']:.3g}, p_rand={m['p_rand']:.3g}, p_sim={m['p_sim']}")
        if "duckdb" not in results:
            return
        d = results["duckdb"]
        for other in ("pandas", "polars"):
            if other not in results:
                continue
            o = results[other]
            ref = {(i, g): (sp, r2) for i, g, sp, r2 in o["rows"]}
            diffs = [abs(a - b) for i, g, sp, r2 in d["rows"] for a, b in zip((sp, r2), ref[(i, g)], strict=True)
                     if a is not None and b is not None and not math.isnan(b)]
            diffs += [abs(v - o["bias_score"][i]) for i, v in d["bias_score"].items()]
            print(f"duckdb vs {other}: {o['seconds'] / d['seconds']:.2f}x faster, "
                  f"{d['peak_gib'] / o['peak_gib']:.2f}x the memory; {len(d['rows'])} groups, max |difference| of "
                  f"Spearman, R2 and bias score {max(diffs):.2e}")
        if {"pandas", "polars"} <= set(results):
            ref = {(i, m): (gap, dec) for i, m, _, gap, dec in results["pandas"]["bias"]}
            got = {(i, m): (gap, dec) for i, m, _, gap, dec in results["polars"]["bias"]}
            assert ref.keys() == got.keys(), "pandas and polars rank different metrics"
            print(f"polars vs pandas, gap and worst decile of {len(ref)} (indicator, metric) pairs: max |difference| "
                  f"{max(abs(a - b) for k in ref for a, b in zip(ref[k], got[k], strict=True)):.2e}")
        print("targets (ratios in one run): duckdb >= 3x faster than pandas, no slower than polars, "
              "<= 0.2x pandas' memory")


if __name__ == "__main__":
    main()
