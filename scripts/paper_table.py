"""The paper's comparison table from a folder of bias reports: Markdown and HTML, one row per method.

    python scripts/paper_table.py paper/demo/reports --out paper/demo/table

Reads ``<reports>/<method>-<seen|unseen>/summary.json`` (written by ``urp-eval bias-report``),
and lays the figures out as Urban-R1's main table does: one row per method, per indicator a
column for seen and one for unseen regions, then the mean over indicators. Figures are on the
0.0-9.9 score scale (``metrics_score_scale``, the paper's scale); R² is the headline, Spearman
and MAE follow as further tables. Missing or undefined figures print as "–".

Each cell is the value ± the half-width of its 95 % interval (the report's analytic interval,
half of hi − lo; the mean columns have none). A dagger (†) marks a difference from the SFT row
that is significant (``--table transfer``: from the base model row): ``urp-eval compare`` of the SFT report and that report (paired bootstrap over
the shared samples, score scale, Holm-corrected per metric over split × indicator, alpha 0.05).
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path
from typing import Any

from urp_data.util.fs import atomic_write_text
from urp_eval.compare import CompareConfig, compare
from urp_eval.inputs import ReportInputError

METHODS = {  # report folder prefix -> row label, in the paper's order
    "knn": "kNN (GeoLLM baseline)",
    "sft": "SFT",
    "grpo": "Urban-R1 (GRPO)",
    "grpo-no-image": "Urban-R1 w/o image",
    "grpo-no-text": "Urban-R1 w/o text",
}
TRANSFER = {  # scripts/paper.sh with PAPER_HELD_OUT: zero-shot on indicators left out of training
    "knn": "kNN (GeoLLM baseline, trained on the indicator)",
    "base": "base model (zero-shot)",
    "transfer": "GRPO on the other indicators (zero-shot)",
}
TABLES = {"paper": (METHODS, "sft"), "transfer": (TRANSFER, "base")}  # rows, and the row others are tested against


def sweep_rows(reports: Path) -> tuple[dict[str, str], str]:
    """scripts/sweep.sh's runs, in the order it wrote them (the first is the reference), and the reference."""
    names = [d.name.removesuffix("-unseen") for d in sorted(reports.glob("*-unseen"), key=lambda d: d.stat().st_mtime)
             if (d / "summary.json").is_file()]
    return {n: n for n in names}, (names[0] if names else "")
SPLITS = {"seen": "test_seen", "unseen": "test_unseen"}
METRICS = {"r2": "R²", "spearman": "Spearman ρ", "mae": "MAE"}


def collect(reports: Path, methods: dict[str, str]) -> tuple[dict[tuple[str, str], dict[str, Any]], list[str]]:
    """(method, seen|unseen) -> that report's score-scale metrics per indicator; and the indicators."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    indicators: list[str] = []
    for method in methods:
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


def significant_vs(reports: Path, found: dict, reference: str) -> tuple[set[tuple[str, str, str, str]], list[str]]:
    """(method, seen|unseen, indicator, metric) cells that differ significantly from the ``reference`` row; and
    why some were not tested."""
    marked, notes = set(), []
    for method, short in found:
        if method == reference or (reference, short) not in found:
            continue
        try:
            result = compare(reports / f"{reference}-{short}", reports / f"{method}-{short}",
                             CompareConfig(scale="score"))
        except ReportInputError as exc:
            notes.append(f"{method} ({short}) not tested against {reference}: {exc}")
            continue
        marked |= {(method, short, r["indicator"], r["metric"]) for r in result.rows if r["significant"]}
    return marked, notes


def splits_in(found: dict) -> list[str]:
    """The splits some report covers, in SPLITS' order (the transfer table has the unseen one only)."""
    return [s for s in SPLITS if any(k[1] == s for k in found)]


def rows(found: dict, indicators: list[str], metric: str, marked: set | frozenset = frozenset(),
         methods: dict[str, str] = METHODS) -> list[list[str]]:
    out = []
    for method, label in methods.items():
        if not any(k[0] == method for k in found):
            continue
        row, vals = [label], {s: [] for s in splits_in(found)}
        for ind in indicators:
            for short, got in vals.items():
                m = found.get((method, short), {}).get(ind, {})
                row.append(_cell_with_interval(m, metric, (method, short, ind, metric) in marked))
                if m.get(metric) is not None:
                    got.append(m[metric])
        row += [_cell(sum(v) / len(v)) if v else "–" for v in vals.values()]
        out.append(row)
    return out


def header(indicators: list[str], splits: list[str]) -> list[str]:
    return ["method", *[f"{i} ({s})" for i in indicators for s in splits], *[f"mean ({s})" for s in splits]]


def legend(methods: dict[str, str], reference: str) -> str:
    return (f"Cells: value ± half-width of the 95 % interval; † differs significantly from the {methods[reference]} "
            "row (paired bootstrap, Holm-corrected, alpha 0.05).")


def markdown(found: dict, indicators: list[str], marked: set, notes: list[str],
             table: tuple[dict[str, str], str] = TABLES["paper"]) -> str:
    parts = ["# Comparison table (0.0-9.9 score scale)", "", legend(*table), *[f"- {n}" for n in notes], ""]
    for metric, title in METRICS.items():
        h = header(indicators, splits_in(found))
        parts += [f"## {title}", "", "| " + " | ".join(h) + " |", "|" + "---|" * len(h)]
        parts += ["| " + " | ".join(r) + " |" for r in rows(found, indicators, metric, marked, table[0])]
        parts.append("")
    return "\n".join(parts)


def html_page(found: dict, indicators: list[str], marked: set, notes: list[str],
              table: tuple[dict[str, str], str] = TABLES["paper"]) -> str:
    body = ["<h1>Comparison table (0.0–9.9 score scale)</h1>", f"<p>{html.escape(legend(*table))}</p>",
            *[f"<p>{html.escape(n)}</p>" for n in notes]]
    for metric, title in METRICS.items():
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header(indicators, splits_in(found)))
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                      for r in rows(found, indicators, metric, marked, table[0]))
        body.append(f"<h2>{html.escape(title)}</h2><table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
    css = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
    return f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><style>{css}</style></head><body>{''.join(body)}</body></html>"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path, help="folder holding <method>-<seen|unseen>/ report folders")
    parser.add_argument("--out", type=Path, required=True, help="folder for table.md and table.html")
    parser.add_argument("--table", choices=[*TABLES, "sweep"], default="paper", help="paper: the main table (rows "
                        "kNN, SFT, GRPO, ablations; † against SFT); transfer: zero-shot on held-out indicators (rows "
                        "kNN, base model, GRPO on the other indicators; † against the base model); sweep: one row per "
                        "scripts/sweep.sh run (<name>-unseen folders; † against the first run)")
    args = parser.parse_args(argv)
    methods, reference = sweep_rows(args.reports) if args.table == "sweep" else TABLES[args.table]
    found, indicators = collect(args.reports, methods)
    if not found:
        print(f"paper_table: error: no <method>-<seen|unseen>/summary.json under {args.reports}", file=sys.stderr)
        return 1
    marked, notes = significant_vs(args.reports, found, reference)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "table.md", markdown(found, indicators, marked, notes, (methods, reference)))
    atomic_write_text(args.out / "table.html", html_page(found, indicators, marked, notes, (methods, reference)))
    print(args.out / "table.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
