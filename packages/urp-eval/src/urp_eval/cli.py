"""``urp-eval``: predict, bias-report, compare.

Flags are generated from the config dataclasses (one flag per field, its help from the field's
metadata); ``--config FILE.yaml`` supplies any of them, explicit flags win. Exit codes: 0 ok,
1 a threshold breached (bias-report) or a runtime failure, 2 a usage or input error. Errors are
one line on stderr; ``URP_DEBUG=1`` adds the traceback. Library modules are imported inside
the commands so ``--help`` is instant and a report never imports torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from urp_data.schema import SchemaError


def _add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kw: dict[str, Any] = {"dest": f.name, "help": f.metadata.get("help", ""), "default": None}
        typ = str(f.type)
        if typ.startswith("list["):
            kw.update(nargs="+", action="extend" if "None" not in typ else "store")
        elif typ.startswith("int"):
            kw["type"] = int
        elif typ.startswith("float"):
            kw["type"] = float
        if f.default is not dataclasses.MISSING and f.default is not None:
            kw["help"] += f" (default: {f.default})"
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kw["help"] += " (required)"
        parser.add_argument(flag, **kw)
    parser.add_argument("--config", help="YAML file whose keys are any of these options; flags win")


def _config(cls: type, args: argparse.Namespace) -> Any:
    """The config dataclass from ``--config`` then the flags given; ValueError names a bad key."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if args.config:
        import yaml

        try:
            with open(args.config) as fh:
                loaded = yaml.safe_load(fh) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"--config {args.config}: {str(exc).splitlines()[0]}") from exc
        if not isinstance(loaded, dict):
            raise ValueError(f"--config {args.config}: expected a mapping of option: value")
        unknown = sorted(set(k.replace("-", "_") for k in loaded) - names)
        if unknown:
            raise ValueError(f"--config {args.config}: unknown option(s) {', '.join(unknown)}")
        values.update({k.replace("-", "_"): v for k, v in loaded.items()})
    values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"missing {', '.join('--' + m.replace('_', '-') for m in missing)}")
    return cls(**values)


def cmd_predict(args: argparse.Namespace) -> int:
    from urp_eval.predict import PredictConfig, predict

    out = predict(_config(PredictConfig, args))
    print(out)
    return 0


def cmd_bias_report(args: argparse.Namespace) -> int:
    from urp_eval.report import ReportConfig, bias_report

    report = bias_report(_config(ReportConfig, args))
    print(report.out)
    for line in report.breaches:
        print(line, file=sys.stderr)
    return 1 if report.breaches else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from urp_eval.report import compare

    print(compare(args.report_a, args.report_b))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from urp_eval.predict import PredictConfig
    from urp_eval.report import ReportConfig

    parser = argparse.ArgumentParser(prog="urp-eval", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="predictions of a model or a baseline (knn, mean) on a build",
                       description=PredictConfig.__doc__)
    _add_config_flags(p, PredictConfig)
    p.set_defaults(func=cmd_predict)
    r = sub.add_parser("bias-report", help="accuracy and geographic bias of predictions (DuckDB)",
                       description=ReportConfig.__doc__)
    _add_config_flags(r, ReportConfig)
    r.set_defaults(func=cmd_bias_report)
    c = sub.add_parser("compare", help="two report summaries side by side")
    c.add_argument("report_a", help="report folder or its summary.json")
    c.add_argument("report_b", help="report folder or its summary.json")
    c.set_defaults(func=cmd_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:  # noqa: BLE001 -- the CLI's job is one line, not a traceback
        if isinstance(exc, (SchemaError, ValueError)):  # usage or input errors (InputError is a SchemaError)
            code, msg = 2, str(exc)
        elif isinstance(exc, OSError):
            code, msg = 1, str(exc)
        else:
            code, msg = 1, f"unexpected {type(exc).__name__}: {exc} (set URP_DEBUG=1 for the traceback)"
        if os.environ.get("URP_DEBUG") == "1":
            traceback.print_exc()
    print(f"urp-eval {args.command}: error: {msg.splitlines()[0] if msg else 'failed'}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
