"""The paper's comparison table from a folder of bias reports: Markdown and HTML, one row per method.

    python scripts/paper_table.py paper/demo/reports --out paper/demo/table

Reads ``<reports>/<method>-<seen|unseen>/summary.json`` (written by ``urp-eval bias-report``),
and lays the figures out as Urban-R1's main table does: one row per method, per indicator a
column for seen and one for unseen regions, then the mean over indicators. Figures are on the
0.0-9.9 score scale (``metrics_score_scale``, the paper's scale); R² is the headline, Spearman
and MAE follow as further tables. Missing or undefined figures print as "–".

Each cell is the value ± the half-width of its 95 % interval (the report's analytic interval,
half of hi − lo; the mean columns have none). A dagger (†) marks a difference from the SFT row
that is significant: ``urp-eval compare`` of the SFT report and that report (paired bootstrap over
the shared samples, score scale, Holm-corrected per metric over split × indicator, alpha 0.05).
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path
from typing import Any

from urp_data.fsutil import atomic_write_text
from urp_eval.compare import CompareConfig, compare
from urp_eval.inputs import ReportInputError

METHODS = {  # report folder prefix -> row label, in the paper's order
    "knn": "kNN (GeoLLM baseline)",
    "sft": "SFT",
    "grpo": "Urban-R1 (GRPO)",
    "grpo-no-image": "Urban-R1 w/o image",
    "grpo-no-text": "Urban-R1 w/o text",
}
SPLITS = {"seen": "test_seen", "unseen": "test_unseen"}
METRICS = {"r2": "R²", "spearman": "Spearman ρ", "mae": "MAE"}


def collect(reports: Path) -> tuple[dict[tuple[str, str], dict[str, Any]], list[str]]:
    """(method, seen|unseen) -> that report's score-scale metrics per indicator; and the indicators."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    indicators: list[str] = []
    for method in METHODS:
        for short, split in SPLITS.items():
            path = reports / f"{method}-{short}" / "summary.json"
            if not path.is_file():
                continue
            per = json.loads(path.read_text()).get("metrics_score_scale", {}).get(split, {})
            found[(method, short)] = per
            indicators += [i for i in per if i not in indicators]
    return found, indicators


def _cell(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}"


def _cell_with_interval(m: dict[str, Any], metric: str, marked: bool) -> str:
    v, lo, hi = m.get(metric), m.get(f"{metric}_lo"), m.get(f"{metric}_hi")
    if v is None:
        return "–"
    text = f"{v:.3f}" if lo is None or hi is None else f"{v:.3f} ± {(hi - lo) / 2:.3f}"
    return text + (" †" if marked else "")


def significant_vs_sft(reports: Path, found: dict) -> tuple[set[tuple[str, str, str, str]], list[str]]:
    """(method, seen|unseen, indicator, metric) cells that differ significantly from SFT; and why some were not tested."""
    marked, notes = set(), []
    for method, short in found:
        sft = reports / f"sft-{short}"
        if method == "sft" or ("sft", short) not in found:
            continue
        try:
            result = compare(sft, reports / f"{method}-{short}", CompareConfig(scale="score"))
        except ReportInputError as exc:
            notes.append(f"{method} ({short}) not tested against SFT: {exc}")
            continue
        marked |= {(method, short, r["indicator"], r["metric"]) for r in result.rows if r["significant"]}
    return marked, notes


def rows(found: dict, indicators: list[str], metric: str, marked: set | frozenset = frozenset()) -> list[list[str]]:
    out = []
    for method, label in METHODS.items():
        if not any(k[0] == method for k in found):
            continue
        row, vals = [label], {"seen": [], "unseen": []}
        for ind in indicators:
            for short in SPLITS:
                m = found.get((method, short), {}).get(ind, {})
                row.append(_cell_with_interval(m, metric, (method, short, ind, metric) in marked))
                if m.get(metric) is not None:
                    vals[short].append(m[metric])
        row += [_cell(sum(v) / len(v)) if v else "–" for v in vals.values()]
        out.append(row)
    return out


def header(indicators: list[str]) -> list[str]:
    return ["method", *[f"{i} ({s})" for i in indicators for s in SPLITS], "mean (seen)", "mean (unseen)"]


LEGEND = ("Cells: value ± half-width of the 95 % interval; † differs significantly from SFT (paired bootstrap, "
          "Holm-corrected, alpha 0.05).")


def markdown(found: dict, indicators: list[str], marked: set, notes: list[str]) -> str:
    parts = ["# Comparison table (0.0-9.9 score scale)", "", LEGEND, *[f"- {n}" for n in notes], ""]
    for metric, title in METRICS.items():
        h = header(indicators)
        parts += [f"## {title}", "", "| " + " | ".join(h) + " |", "|" + "---|" * len(h)]
        parts += ["| " + " | ".join(r) + " |" for r in rows(found, indicators, metric, marked)]
        parts.append("")
    return "\n".join(parts)


def html_page(found: dict, indicators: list[str], marked: set, notes: list[str]) -> str:
    body = ["<h1>Comparison table (0.0–9.9 score scale)</h1>", f"<p>{html.escape(LEGEND)}</p>",
            *[f"<p>{html.escape(n)}</p>" for n in notes]]
    for metric, title in METRICS.items():
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header(indicators))
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                      for r in rows(found, indicators, metric, marked))
        body.append(f"<h2>{html.escape(title)}</h2><table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
    css = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
    return f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><style>{css}</style></head><body>{''.join(body)}</body></html>"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path, help="folder holding <method>-<seen|unseen>/ report folders")
    parser.add_argument("--out", type=Path, required=True, help="folder for table.md and table.html")
    args = parser.parse_args(argv)
    found, indicators = collect(args.reports)
    if not found:
        print(f"paper_table: error: no <method>-<seen|unseen>/summary.json under {args.reports}", file=sys.stderr)
        return 1
    marked, notes = significant_vs_sft(args.reports, found)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "table.md", markdown(found, indicators, marked, notes))
    atomic_write_text(args.out / "table.html", html_page(found, indicators, marked, notes))
    print(args.out / "table.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
