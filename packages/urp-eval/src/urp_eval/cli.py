"""``urp-eval``: predict, bias-report, compare.

Flags are generated from the config dataclasses (one flag per field, its help from the field's
metadata); ``--config FILE.yaml`` supplies any of them, explicit flags win. Errors and exit
codes follow the shared contract in :mod:`urp_data.clikit`: 0 ok, 1 an error, 2 a usage
error, 3 a ``--fail-under``/``--max-gap`` threshold breached or, for ``compare``, B significantly
worse than A on a ``--fail-if-worse`` metric. Library modules are imported
inside the commands so ``--help`` is instant and a report never imports torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from urp_data.clikit import EXIT_OK, EXIT_THRESHOLD, add_dataclass_flags, config_from_args, run, setup_logging


def cmd_predict(args: argparse.Namespace) -> int:
    from urp_eval.predict import PredictConfig, predict

    print(predict(config_from_args(PredictConfig, args)))
    return EXIT_OK


def cmd_bias_report(args: argparse.Namespace) -> int:
    from urp_eval.report import ReportConfig, bias_report

    report = bias_report(config_from_args(ReportConfig, args))
    print(report.out)
    for line in report.breaches:
        print(line, file=sys.stderr)
    return EXIT_THRESHOLD if report.breaches else EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from urp_eval.compare import CompareConfig, compare, render

    result = compare(args.report_a, args.report_b, config_from_args(CompareConfig, args))
    print(render(result))
    for line in result.failed:
        print(line, file=sys.stderr)
    return EXIT_THRESHOLD if result.failed else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from urp_eval.compare import CompareConfig
    from urp_eval.predict import PredictConfig
    from urp_eval.report import ReportConfig

    parser = argparse.ArgumentParser(prog="urp-eval", description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="predictions of a model or a baseline (knn, mean) on a build",
                       description=PredictConfig.__doc__)
    add_dataclass_flags(p, PredictConfig)
    p.set_defaults(func=cmd_predict)
    r = sub.add_parser("bias-report", help="accuracy and geographic bias of predictions (DuckDB)",
                       description=ReportConfig.__doc__)
    add_dataclass_flags(r, ReportConfig)
    r.set_defaults(func=cmd_bias_report)
    c = sub.add_parser("compare", help="paired bootstrap differences B - A of two reports of one build and split",
                       description=CompareConfig.__doc__)
    c.add_argument("report_a", help="report folder or its summary.json")
    c.add_argument("report_b", help="report folder or its summary.json")
    add_dataclass_flags(c, CompareConfig)
    c.set_defaults(func=cmd_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging("INFO")
    return run(f"urp-eval {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
