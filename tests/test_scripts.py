"""The demo's reward plot and the paper table script, on small written inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_plot_rewards_writes_a_png_and_one_line_per_step(tmp_path):
    logs = [{"step": s, "reward": 0.1 * s, "reward_std": 0.2, "grad_norm": 0.5, "rewards/format/mean": 0.1 * s,
             "rewards/accuracy/mean": 0.05 * s} for s in (1, 2, 3)]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": [*logs, {"train_runtime": 1.0}]}))
    out = _script("plot_rewards.py", str(tmp_path), "--out", str(tmp_path / "r.png"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("reward_std 0.200") == 3 and "step   3  reward 0.300" in out.stdout
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = _script("plot_rewards.py", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.png"))
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "not found" in missing.stderr


def _summary(split: str, r2: dict[str, float | None]) -> dict:
    return {"metrics_score_scale": {split: {i: {"r2": v, "spearman": v, "mae": 1.0} for i, v in r2.items()}}}


def test_paper_table_lays_out_methods_by_indicator_seen_and_unseen(tmp_path):
    reports = tmp_path / "reports"
    for method, seen, unseen in (("sft", 0.5, 0.2), ("grpo", 0.6, 0.4), ("grpo-no-text", 0.3, None)):
        for short, split, v in (("seen", "test_seen", seen), ("unseen", "test_unseen", unseen)):
            (reports / f"{method}-{short}").mkdir(parents=True)
            (reports / f"{method}-{short}" / "summary.json").write_text(json.dumps(
                _summary(split, {"population": v, "night_light": 0.1})))
    out = _script("paper_table.py", str(reports), "--out", str(tmp_path / "t"))
    assert out.returncode == 0, out.stderr
    md = (tmp_path / "t" / "table.md").read_text()
    header = "| method | population (seen) | population (unseen) | night_light (seen) | night_light (unseen) |"
    assert header in md
    assert "| Urban-R1 (GRPO) | 0.600 | 0.400 | 0.100 | 0.100 | 0.350 | 0.250 |" in md
    assert "| Urban-R1 w/o text | 0.300 | – | 0.100 | 0.100 | 0.200 | 0.100 |" in md
    assert md.index("| SFT |") < md.index("| Urban-R1 (GRPO) |")  # the paper's row order
    assert "<td>Urban-R1 (GRPO)</td>" in (tmp_path / "t" / "table.html").read_text()
    empty = _script("paper_table.py", str(tmp_path / "none"), "--out", str(tmp_path / "u"))
    assert empty.returncode == 1 and "no <method>" in empty.stderr


def test_paper_table_gives_intervals_and_marks_significant_differences_from_sft(demo_build, tmp_path):
    """Real reports of the demo (kNN as the SFT row, the training mean as GRPO): ± on every defined cell, and a
    dagger exactly where `urp-eval compare` finds a significant difference."""
    from urp_eval.cli import main
    from urp_eval.compare import CompareConfig, compare

    reports = tmp_path / "reports"
    for method, backend in (("sft", "knn"), ("grpo", "mean")):
        for short in ("seen", "unseen"):
            preds = tmp_path / f"{method}-{short}.parquet"
            assert main(["predict", "--data", str(demo_build), "--backend", backend, "--split", short,
                         "--out", str(preds)]) == 0
            assert main(["bias-report", "--data", str(demo_build), "--predictions", str(preds), "--split", short,
                         "--out", str(reports / f"{method}-{short}"), "--permutations", "0"]) == 0
    out = _script("paper_table.py", str(reports), "--out", str(tmp_path / "t"))
    assert out.returncode == 0, out.stderr
    md = (tmp_path / "t" / "table.md").read_text()
    r2 = md.split("## R²")[1].split("##")[0]
    grpo = next(line for line in r2.splitlines() if line.startswith("| Urban-R1 (GRPO) |")).split(" | ")[1:-2]
    result = compare(reports / "sft-unseen", reports / "grpo-unseen", CompareConfig(scale="score"))
    expected = {(r["split"], r["indicator"]) for r in result.rows if r["metric"] == "r2" and r["significant"]}
    indicators = [h.split(" (")[0] for h in md.split("## R²")[1].splitlines()[2].split(" | ")[1:-2:2]]
    unseen_cells = dict(zip(indicators, grpo[1::2]))
    assert any("±" in c for c in grpo)
    for ind, cell in unseen_cells.items():
        assert cell.endswith("†") == (("test_unseen", ind) in expected), (ind, cell)

    # the sweep's table (scripts/sweep.sh): one row per run in the order written, † against the first run
    runs = tmp_path / "sweep"
    for i, (name, method) in enumerate((("lambda1.0_frozen", "grpo"), ("lambda0.5_trainable", "sft"))):
        shutil.copytree(reports / f"{method}-unseen", runs / f"{name}-unseen")
        os.utime(runs / f"{name}-unseen", (1e9 + i, 1e9 + i))  # lambda1.0_frozen was written first
    out = _script("paper_table.py", str(runs), "--out", str(tmp_path / "s"), "--table", "sweep")
    assert out.returncode == 0, out.stderr
    r2 = (tmp_path / "s" / "table.md").read_text().split("## R²")[1].split("##")[0].splitlines()
    assert "differs significantly from the lambda1.0_frozen row" in (tmp_path / "s" / "table.md").read_text()
    assert [line.split(" | ")[0] for line in r2 if line.startswith("| ") and "---" not in line] == [
        "| method", "| lambda1.0_frozen", "| lambda0.5_trainable"]
    swept = next(line for line in r2 if line.startswith("| lambda0.5_trainable")).split(" | ")[1:-1]
    reverse = compare(reports / "grpo-unseen", reports / "sft-unseen", CompareConfig(scale="score"))
    marked = {r["indicator"] for r in reverse.rows if r["metric"] == "r2" and r["significant"]}
    columns = [h.removesuffix(" (unseen)") for h in r2[2].split(" | ")[1:-1]]  # "| method | a (unseen) | ... |"
    assert len(columns) == len(swept) and set(columns) <= set(indicators) and columns
    assert [c.endswith("†") for c in swept] == [ind in marked for ind in columns]


def test_paper_refuses_a_missing_base_model_at_once(tmp_path):
    """A recipe set whose base is neither a folder nor made by the script: one line, exit 1, nothing trained."""
    (tmp_path / "scripts").mkdir()
    for script in ("paper.sh", "warmstart_demo.sh"):
        (tmp_path / "scripts" / script).write_bytes((REPO / "scripts" / script).read_bytes())
    (tmp_path / "configs" / "train").mkdir(parents=True)
    for name in ("mine.yaml", "sft_mine.yaml"):
        (tmp_path / "configs" / "train" / name).write_text("model_name_or_path: ./runs/my-base\n")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "manifest.json").write_text("{}")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(["bash", str(tmp_path / "scripts" / "paper.sh"), "build", "mine"], capture_output=True,
                         text=True, timeout=60, check=False, env=env)
    assert out.returncode == 1
    assert out.stderr == ("paper.sh: error: model './runs/my-base' not found: it looks like a local path and there "
                          "is no such folder; check the path, or give a hub id (org/name)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "configs", "scripts"]

