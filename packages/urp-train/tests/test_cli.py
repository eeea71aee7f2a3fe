import json
from pathlib import Path

import pytest
import torch
from urp_train.cli import main

REPO = Path(__file__).resolve().parents[3]
FAST = ["--max_steps", "2", "--save_steps", "1", "--logging_steps", "1", "--per_device_train_batch_size", "4",
        "--max_examples", "16"]


@pytest.mark.parametrize(("command", "expected"), [
    ("grpo", ["--advantage_grouping", "--build_dir", "--drop", "--reward_funcs", "--num_generations",
              "--min_pixels", "--config"]),
    ("sft", ["--build_dir", "--completion_only_loss", "--max_pixels"]),
    ("tiny-model", ["--out", "--seed"]),
])
def test_command_help_lists_the_config_fields(command, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in expected:
        assert flag in text, flag


def test_usage_and_input_errors_are_one_line(tmp_path, tiny_build, capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error: no such command
        main(["fly"])
    assert exit_info.value.code == 2
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("build_dir: x\nlearning_rat: 0.1\n")
    assert main(["grpo", "--config", str(recipe), "--use_cpu", "true"]) == 2
    err = capsys.readouterr().err
    assert "learning_rat" in err and "Traceback" not in err
    assert main(["grpo", "--use_cpu", "true", "--build_dir", str(tmp_path / "nowhere"),
                 "--output_dir", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("urp-train grpo: error: ") and "manifest.json not found" in err[-1]
    with pytest.raises(SystemExit) as exit_info:  # argparse's own usage error
        main(["grpo", "--use_cpu", "true", "--build_dir", str(tiny_build), "--drop", "audio"])
    assert exit_info.value.code == 2


def test_a_missing_base_model_names_the_command_that_makes_it(tmp_path, tiny_build, capsys, monkeypatch):
    """The demo recipe starts from the warm start; in a folder without it, one line says how to make it."""
    monkeypatch.chdir(tmp_path)
    assert main(["grpo", "--config", str(REPO / "configs/train/demo.yaml"), "--build_dir", str(tiny_build),
                 "--output_dir", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("urp-train grpo: error: model 'runs/demo-warmstart' not found: it looks like a local path "
                       "and there is no such folder; make it with "
                       "`urp-train sft --config configs/train/warmstart_demo.yaml`")
    assert not (tmp_path / "o").exists()


def _log_steps(run: Path) -> list[int]:
    state = json.loads((run / "trainer_state.json").read_text())
    return [e["step"] for e in state["log_history"] if "loss" in e]


@pytest.mark.slow  # trains a model (tens of seconds)
def test_grpo_from_the_demo_recipe_checkpoints_resumes_and_saves_a_loadable_model(tmp_path, tiny_build,
                                                                                  tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    run = tmp_path / "grpo"
    args = ["grpo", "--config", str(REPO / "configs/train/demo.yaml"), "--build_dir", str(tiny_build),
            "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(run), *FAST,
            "--max_completion_length", "8", "--num_generations", "2"]  # 2 prompts, one run of prompts_per_group
    assert main(args) == 0
    assert (run / "checkpoint-1").is_dir() and (run / "checkpoint-2").is_dir()
    state = json.loads((run / "trainer_state.json").read_text())
    first = state["log_history"][0]
    assert "loss" in first and "rewards/accuracy/mean" in first and "rewards/format/mean" in first
    assert any(k.startswith("rewards_by_group/g-") for k in first)
    assert json.loads((run / "train_results.json").read_text())["epoch"] > 0

    assert main([*args, "--max_steps", "3"]) == 0  # resumes from checkpoint-2: only step 3 runs
    assert _log_steps(run) == [1, 2, 3]
    assert (run / "checkpoint-3").is_dir()

    model = AutoModelForImageTextToText.from_pretrained(run)
    processor = AutoProcessor.from_pretrained(run)
    assert processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == 151655
    saved = {n: p for n, p in model.named_parameters()}
    ckpt = AutoModelForImageTextToText.from_pretrained(run / "checkpoint-3")
    for name, param in ckpt.named_parameters():
        torch.testing.assert_close(param, saved[name])


@pytest.mark.slow  # trains a model (tens of seconds)
def test_sft_baseline_trains_and_saves(tmp_path, tiny_build, tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    run = tmp_path / "sft"
    before = {n: p.clone() for n, p in AutoModelForImageTextToText.from_pretrained(tiny_model_dir).named_parameters()}
    assert main(["sft", "--config", str(REPO / "configs/train/sft_demo.yaml"), "--build_dir", str(tiny_build),
                 "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(run), *FAST]) == 0
    assert _log_steps(run) == [1, 2]
    after = AutoModelForImageTextToText.from_pretrained(run)
    changed = [n for n, p in after.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)


def test_tiny_model_command_writes_a_loadable_model(tmp_path, capsys):
    from transformers import AutoConfig

    assert main(["tiny-model", "--out", str(tmp_path / "m")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "m")
    config = AutoConfig.from_pretrained(tmp_path / "m")
    assert config.model_type == "qwen2_5_vl" and config.image_token_id == 151655
    assert config.vision_start_token_id == 151652 and config.text_config.num_hidden_layers == 2


@pytest.mark.slow  # trains a model (tens of seconds)
def test_full_fine_tuning_of_16_bit_weights_is_warned_about(tiny_model_dir):
    from urp_train.models import load_model_and_processor, master_weight_warning

    bf16, _ = load_model_and_processor(tiny_model_dir, dtype="bfloat16")
    assert "stored in bfloat16" in master_weight_warning(bf16, use_peft=False)
    assert master_weight_warning(bf16, use_peft=True) is None  # only the (fp32) adapters train
    fp32, _ = load_model_and_processor(tiny_model_dir, dtype="float32")
    assert master_weight_warning(fp32, use_peft=False) is None
