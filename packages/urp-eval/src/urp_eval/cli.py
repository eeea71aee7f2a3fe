"""``urp-eval``: predict, bias-report, compare.

Each command is a :class:`urp_data.util.clikit.Command`: flags generated from its config dataclass
(one flag per field, both spellings, grouped by topic, defaults in ``--help``) and ``main(cfg)``;
``--config FILE.yaml`` supplies any of them, explicit flags win. Errors and exit
codes follow the shared contract in :mod:`urp_data.util.clikit`: 0 ok, 1 an error, 2 a usage
error, 3 a ``--fail-under``/``--max-gap`` threshold breached. Library modules are imported
inside the commands so ``--help`` is instant and a report never imports torch.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from urp_data.util.clikit import EXIT_OK, EXIT_THRESHOLD, Command, dispatch

if TYPE_CHECKING:
    from urp_eval.predict import PredictConfig
    from urp_eval.report import ReportConfig


@dataclass
class CompareConfig:
    """What ``urp-eval compare`` reads: two bias reports (the second is compared with the first)."""

    report_a: str = field(metadata={"help": "report folder or its summary.json"})
    report_b: str = field(metadata={"help": "report folder or its summary.json"})


def _predict(cfg: PredictConfig) -> int:
    from urp_eval.predict import predict

    print(predict(cfg))
    return EXIT_OK


def _bias_report(cfg: ReportConfig) -> int:
    from urp_eval.report import bias_report

    report = bias_report(cfg)
    print(report.out)
    for line in report.breaches:
        print(line, file=sys.stderr)
    return EXIT_THRESHOLD if report.breaches else EXIT_OK


def _compare(cfg: CompareConfig) -> int:
    from urp_eval.report import compare

    print(compare(cfg.report_a, cfg.report_b))
    return EXIT_OK


def commands() -> list[Command]:
    """The commands of ``urp-eval``; their configs are imported here, not when the module is."""
    from urp_eval.predict import PredictConfig
    from urp_eval.report import ReportConfig

    return [
        Command("predict", "predictions of a model or a baseline (knn, mean) on a build", _predict, PredictConfig,
                description=PredictConfig.__doc__,
                groups={"data": ["data", "split", "indicators", "max_samples", "drop", "out", "save_every"],
                        "model": ["backend", "model", "k"],
                        "generation": ["samples_per_prompt", "temperature", "max_new_tokens", "batch_size", "seed"],
                        "engine": ["engine", "ray_address"]}),
        Command("bias-report", "accuracy and geographic bias of predictions (DuckDB)", _bias_report, ReportConfig,
                description=ReportConfig.__doc__,
                groups={"inputs": ["data", "predictions", "split", "out"],
                        "groups": ["group_by", "min_group_size", "anchor"],
                        "spatial statistics": ["permutations", "permutation_cells", "seed", "memory_limit"],
                        "thresholds (exit code 3)": ["fail_under", "max_gap"]}),
        Command("compare", "two report summaries side by side", _compare, CompareConfig,
                positionals=("report_a", "report_b")),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("urp-eval", (__doc__ or "").splitlines()[0], commands(), argv, log_level="INFO")


if __name__ == "__main__":
    sys.exit(main())
