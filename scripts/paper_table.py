"""The paper's comparison table from a folder of bias reports: Markdown and HTML, one row per method.

    python scripts/paper_table.py paper/demo/reports --out paper/demo/table

Reads ``<reports>/<method>-<seen|unseen>/summary.json`` (written by ``urp-eval bias-report``),
and lays the figures out as Urban-R1's main table does: one row per method, per indicator a
column for seen and one for unseen regions, then the mean over indicators. Figures are on the
0.0-9.9 score scale (``metrics_score_scale``, the paper's scale); R² is the headline, Spearman
and MAE follow as further tables. Missing or undefined figures print as "–".
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path
from typing import Any

from urp_data.util.fs import atomic_write_text

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


def rows(found: dict, indicators: list[str], metric: str) -> list[list[str]]:
    out = []
    for method, label in METHODS.items():
        if not any(k[0] == method for k in found):
            continue
        row, vals = [label], {"seen": [], "unseen": []}
        for ind in indicators:
            for short in SPLITS:
                v = found.get((method, short), {}).get(ind, {}).get(metric)
                row.append(_cell(v))
                if v is not None:
                    vals[short].append(v)
        row += [_cell(sum(v) / len(v)) if v else "–" for v in vals.values()]
        out.append(row)
    return out


def header(indicators: list[str]) -> list[str]:
    return ["method", *[f"{i} ({s})" for i in indicators for s in SPLITS], "mean (seen)", "mean (unseen)"]


def markdown(found: dict, indicators: list[str]) -> str:
    parts = ["# Comparison table (0.0-9.9 score scale)", ""]
    for metric, title in METRICS.items():
        h = header(indicators)
        parts += [f"## {title}", "", "| " + " | ".join(h) + " |", "|" + "---|" * len(h)]
        parts += ["| " + " | ".join(r) + " |" for r in rows(found, indicators, metric)]
        parts.append("")
    return "\n".join(parts)


def html_page(found: dict, indicators: list[str]) -> str:
    body = ["<h1>Comparison table (0.0–9.9 score scale)</h1>"]
    for metric, title in METRICS.items():
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header(indicators))
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                      for r in rows(found, indicators, metric))
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
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "table.md", markdown(found, indicators))
    atomic_write_text(args.out / "table.html", html_page(found, indicators))
    print(args.out / "table.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
