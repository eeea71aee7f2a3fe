"""``urp-eval``: predict, bias-report, compare.

Each command is a :class:`urp_data.util.clikit.Command`: flags generated from its config dataclass
(one flag per field, both spellings, grouped by topic, defaults in ``--help``) and ``main(cfg)``;
``--config FILE.yaml`` supplies any of them, explicit flags win. Errors and exit
codes follow the shared contract in :mod:`urp_data.util.clikit`: 0 ok, 1 an error, 2 a usage
error, 3 a ``--fail-under``/``--max-gap`` threshold breached or, for ``compare``, B significantly
worse than A on a ``--fail-if-worse`` metric. Library modules are imported
inside the commands so ``--help`` is instant and a report never imports torch.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from urp_data.util.clikit import EXIT_OK, EXIT_THRESHOLD, Command, dispatch

if TYPE_CHECKING:
    from urp_eval.config import PredictConfig, ReportConfig


def _compare_command() -> type:
    """``urp-eval compare``'s flags: the two reports, then :class:`urp_eval.compare.CompareConfig`."""
    from urp_eval.config import CompareConfig

    @dataclass(kw_only=True)
    class CompareCommand(CompareConfig):
        report_a: str = field(metadata={"help": "report A (the baseline): its folder or its summary.json"})
        report_b: str = field(metadata={"help": "report B (compared with A): its folder or its summary.json"})

    CompareCommand.__doc__ = CompareConfig.__doc__
    return CompareCommand


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


def _compare(cfg: Any) -> int:
    from urp_eval.compare import compare, render

    result = compare(cfg.report_a, cfg.report_b, cfg)
    print(render(result))
    for line in result.failed:
        print(line, file=sys.stderr)
    return EXIT_THRESHOLD if result.failed else EXIT_OK


def commands() -> list[Command]:
    """The commands of ``urp-eval``; their configs are imported here, not when the module is."""
    from urp_eval.config import PredictConfig, ReportConfig

    compare_config = _compare_command()
    return [
        Command("predict", "predictions of a model or a baseline (knn, mean) on a build", _predict, PredictConfig,
                description=PredictConfig.__doc__,
                groups={"data": ["data", "split", "indicators", "max_samples", "drop", "out", "save_every"],
                        "model": ["backend", "model", "k"],
                        "generation": ["samples_per_prompt", "temperature", "max_new_tokens", "batch_size", "seed"],
                        "vllm engine": ["max_model_len", "vllm_kv_cache_gib", "vllm_enforce_eager"],
                        "engine": ["engine", "ray_address"]}),
        Command("bias-report", "accuracy and geographic bias of predictions (DuckDB)", _bias_report, ReportConfig,
                description=ReportConfig.__doc__,
                groups={"inputs": ["data", "predictions", "split", "out"],
                        "groups": ["group_by", "min_group_size", "anchor"],
                        "spatial statistics": ["permutations", "permutation_cells", "seed", "memory_limit"],
                        "uncertainty": ["level", "bootstrap", "group_test_samples"],
                        "thresholds (exit code 3)": ["fail_under", "max_gap"]}),
        Command("compare", "paired bootstrap differences B - A of two reports of one build and split", _compare,
                compare_config, description=compare_config.__doc__, positionals=("report_a", "report_b")),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("urp-eval", (__doc__ or "").splitlines()[0], commands(), argv, log_level="INFO")


if __name__ == "__main__":
    sys.exit(main())
