"""End to end: `urp-train` on the real `demo` build with the tiny offline Qwen2.5-VL."""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # trains a model (tens of seconds)
def test_every_demo_prompt_has_the_image_tokens_its_chip_needs(demo_build, tiny_model_dir):
    from transformers import AutoProcessor
    from urp_train.dataset import image_token_counts, load_examples

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    # the census population covers only Olinda (train), never Paraguay (test_unseen)
    for split, expected in (("train", {"population", "night_light"}),
                            ("test_unseen", {"settlement_population", "night_light"})):
        ds = load_examples(demo_build, split)
        assert set(ds["indicator"]) >= expected
        counts = image_token_counts(ds, processor)
        assert len(counts) == len(ds) and {c for c in counts} == {(16, 16)}


@pytest.mark.slow
def test_grpo_demo_recipe_runs_on_the_demo_build(demo_build, tiny_model_dir, tmp_path):
    from transformers import AutoModelForImageTextToText

    run = tmp_path / "demo-grpo"
    cmd = ["urp-train", "grpo", "--config", str(REPO / "configs/train/demo.yaml"), "--build_dir", str(demo_build),
           "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(run), "--max_steps", "1",
           "--save_strategy", "no", "--max_completion_length", "8"]  # checkpoints: test_cli.py
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600, cwd=REPO,
                         env={**os.environ, "URP_DEBUG": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    logs = json.loads((run / "trainer_state.json").read_text())["log_history"]
    groups = {k.split("/")[1] for e in logs for k in e if k.startswith("rewards_by_group/")}
    assert groups and all(g[:4] in ("BRA-", "ARG-", "PRY-") for g in groups)  # the build's geographic groups
    assert AutoModelForImageTextToText.from_pretrained(run).config.model_type == "qwen2_5_vl"
