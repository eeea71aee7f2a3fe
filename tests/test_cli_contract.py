"""The command-line contract of urp-data, urp-train and urp-eval (``urp_data.util.clikit``), checked on all three.

0 success; 1 an error, one stderr line; 2 a usage error; 3 a threshold breached (bias-report,
see packages/urp-eval/tests/test_report.py); ``URP_DEBUG`` (any non-empty value) adds the
traceback; unexpected exceptions are one line too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from urp_data import cli as data_cli
from urp_eval import cli as eval_cli
from urp_train import cli as train_cli

MAINS = {"urp-data": data_cli.main, "urp-train": train_cli.main, "urp-eval": eval_cli.main}


def _err(capsys: pytest.CaptureFixture) -> str:
    return capsys.readouterr().err


def _missing_build_argv(prog: str, tmp_path: Path) -> list[str]:
    """A command that fails on its input: the build folder does not exist."""
    missing = str(tmp_path / "no-such-build")
    return {
        "urp-data": ["build", "--region", str(tmp_path / "no-such-region.yaml"), "--out", str(tmp_path / "o")],
        "urp-train": ["sft", "--build_dir", missing, "--output_dir", str(tmp_path / "o"), "--use_cpu", "true"],
        "urp-eval": ["predict", "--data", missing, "--backend", "mean", "--out", str(tmp_path / "p.parquet")],
    }[prog]


@pytest.mark.parametrize("prog", list(MAINS))
def test_input_errors_are_one_line_and_exit_1(prog: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert MAINS[prog](_missing_build_argv(prog, tmp_path)) == 1
    err = _err(capsys)
    assert err.count("\n") == 1 and err.startswith(f"{prog} ") and ": error: " in err and "Traceback" not in err


@pytest.mark.parametrize("prog", list(MAINS))
@pytest.mark.parametrize("value", ["1", "yes"])
def test_urp_debug_adds_the_traceback(prog: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URP_DEBUG", value)
    assert MAINS[prog](_missing_build_argv(prog, tmp_path)) == 1
    err = _err(capsys)
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1].startswith(f"{prog} ")


@pytest.mark.parametrize("prog", ["urp-data", "urp-eval"])
def test_unknown_config_keys_are_usage_errors(prog: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "flags.yaml"
    cfg.write_text("data: x\nregion: y\nsampels: 3\n")
    command = "build" if prog == "urp-data" else "predict"
    assert MAINS[prog]([command, "--config", str(cfg)]) == 2
    err = _err(capsys)
    assert err.count("\n") == 1 and "unknown option(s)" in err and "sampels" in err


@pytest.mark.parametrize("argv", [["build", "--region", "demo", "--chunk-size", "0"],
                                  ["build", "--out", "x"]])
def test_invalid_values_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    assert data_cli.main(argv) == 2
    err = _err(capsys)
    assert err.count("\n") == 1 and ("chunk_size" in err or "--region" in err)


def test_unexpected_exceptions_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import urp_data.build.run

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(urp_data.build.run, "build", boom)
    assert data_cli.main(["build", "--region", "demo", "--out", str(tmp_path)]) == 1
    err = _err(capsys)
    assert err == ("urp-data build: error: unexpected RuntimeError: disk on fire "
                   "(set URP_DEBUG=1 for the traceback)\n")


def test_config_files_work_the_same_way_in_data_and_eval(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Hyphen and underscore keys, explicit flags win, unreadable files are usage errors."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    for prog, command in (("urp-data", "build"), ("urp-eval", "bias-report")):
        assert MAINS[prog]([command, "--config", str(bad)]) == 2
        assert "expected a mapping" in _err(capsys)
        assert MAINS[prog]([command, "--config", str(tmp_path / "missing.yaml")]) == 2
        assert "missing.yaml" in _err(capsys)
