"""`urp-train grpo|sft --dry-run`: every shipped recipe plans at its documented process counts, and each
defect the preflight exists for (issue 19, defects 1-6 and 8) is caught in a recipe that has it.

The 7B is planned from tests/data/qwen2_5_vl_7b (its config.json and preprocessor_config.json, no weights):
nothing reaches the hub.
"""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import pytest
import yaml
from urp_train.cli import main

REPO = Path(__file__).resolve().parents[3]
RECIPES = REPO / "configs" / "train"
SEVEN_B = Path(__file__).parent / "data" / "qwen2_5_vl_7b"
ZERO3 = ["--accelerate-config", str(REPO / "configs" / "accelerate" / "zero3.yaml")]
GPU = ("qwen2_5_vl_7b.yaml", "qwen2_5_vl_7b_prompt_grouping.yaml", "sft_qwen2_5_vl_7b.yaml")  # 8 GPUs, ZeRO-3


def _command(recipe: Path) -> str:
    return "grpo" if "num_generations" in yaml.safe_load(recipe.read_text()) else "sft"


def _dry(capsys, recipe: Path, *flags: str, model: Path = SEVEN_B) -> tuple[int, str, str]:
    rc = main([_command(recipe), "--config", str(recipe), "--dry-run", "--model_name_or_path", str(model), *flags])
    out = capsys.readouterr()
    return rc, out.out, out.err.strip().splitlines()[-1] if out.err.strip() else ""


def _broken(tmp_path: Path, name: str = "qwen2_5_vl_7b.yaml", **changes) -> Path:
    """A copy of a shipped recipe with keys changed (None removes the key)."""
    recipe = yaml.safe_load((RECIPES / name).read_text())
    for key, value in changes.items():
        if value is None:
            del recipe[key]
        else:
            recipe[key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def _readme_commands() -> list[list[str]]:
    """The shell commands of packages/urp-train/README.md's bash blocks, continuation lines joined."""
    text = (REPO / "packages" / "urp-train" / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```bash\n")[1:]]
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line.split(" &")[0]) for line in lines if line.strip()]


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_plans_at_its_documented_process_count(recipe, capsys, tiny_model_dir):
    if recipe.name in GPU:
        rc, out, err = _dry(capsys, recipe, *ZERO3)
    else:  # the CPU demos: one process, the tiny model
        rc, out, err = _dry(capsys, recipe, model=tiny_model_dir)
    assert rc == 0, err
    assert out.startswith(f"processes: {8 if recipe.name in GPU else 1} ")
    assert "attention: " in out and "parameters: " in out and "longest sequence: " in out
    if recipe.name in GPU:
        assert "parameters: 8.29 B" in out  # Qwen2.5-VL-7B's published size, from its config alone
        assert "image tokens per prompt: 256 " in out  # 448x448 chips
    if recipe.name.startswith("qwen2_5_vl_7b"):
        assert "prompts per optimiser step: 128 (640 completions, 5 per prompt)" in out
        assert "prompts per rollout: 256 (1280 completions); updates per rollout: 2" in out
        assert "vLLM (colocate, tensor parallel 1): KV cache 0.22 GiB per 4096-token sequence" in out


def test_the_readmes_gpu_commands_pass_the_preflight(capsys):
    from urp_train.models import URPModelConfig
    from urp_train.preflight import check_serve_command

    commands = _readme_commands()
    launches = [c for c in commands if "accelerate" in c and "grpo" in c]
    serve = next(c for c in commands if "vllm-serve" in c)
    assert len(launches) == 2  # colocate on 8 GPUs, server mode on 4
    for launch in launches:
        processes = launch[launch.index("--num_processes") + 1] if "--num_processes" in launch else "8"
        argv = launch[launch.index("grpo") + 1:]
        rc = main(["grpo", *argv, "--dry-run", *ZERO3, "--num-processes", processes,
                   "--model_name_or_path", str(SEVEN_B)])
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert "(640 completions, 5 per prompt)" in out.out and "updates per rollout: 2" in out.out
    model = URPModelConfig(model_name_or_path="Qwen/Qwen2.5-VL-7B-Instruct", min_pixels=200704, max_pixels=200704)
    check_serve_command(serve[serve.index("vllm-serve") + 1:], model, 4096)
    assert "--mm-processor-kwargs '{\"min_pixels\": 200704, \"max_pixels\": 200704}'" in out.out


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed here")
def test_defect_1_an_attention_implementation_that_cannot_import(tmp_path, capsys):
    rc, _, err = _dry(capsys, _broken(tmp_path, attn_implementation="flash_attention_2"), *ZERO3)
    assert rc == 1 and "needs the flash_attn package" in err and "use sdpa" in err


def test_defect_2_vllm_max_model_length_unset_or_over_the_memory_budget(tmp_path, capsys):
    rc, _, err = _dry(capsys, _broken(tmp_path, vllm_max_model_length=None), *ZERO3)
    assert rc == 1 and "vllm_max_model_length is unset" in err and "128000-token context" in err
    rc, _, err = _dry(capsys, _broken(tmp_path, vllm_max_model_length=1024), *ZERO3)
    assert rc == 1 and "shorter than the longest prompt plus max_completion_length" in err
    rc, _, err = _dry(capsys, RECIPES / "qwen2_5_vl_7b.yaml", *ZERO3, "--gpu-memory-gib", "48")
    assert rc == 1 and "exceeds its budget" in err  # 0.3 x 48 GiB cannot hold 15.4 GiB of weights


def test_defect_3_data_parallel_vllm_server_for_a_dense_model():
    from urp_train.models import URPModelConfig
    from urp_train.preflight import PreflightError, check_serve_command

    model = URPModelConfig(model_name_or_path="Qwen/Qwen2.5-VL-7B-Instruct", min_pixels=200704, max_pixels=200704)
    old = shlex.split("--model Qwen/Qwen2.5-VL-7B-Instruct --data_parallel_size 4 --port 8000")  # the old README's
    with pytest.raises(PreflightError, match="--data_parallel_size 4: vLLM refuses data parallelism"):
        check_serve_command(old, model, 4096)
    no_bounds = shlex.split("--model Qwen/Qwen2.5-VL-7B-Instruct --tensor_parallel_size 4 --max_model_len 4096")
    with pytest.raises(PreflightError, match="mm-processor-kwargs unset differ"):
        check_serve_command(no_bounds, model, 4096)


def test_defect_4_server_mode_arithmetic_on_four_processes(capsys):
    old = ["--vllm_mode", "server", "--per_device_train_batch_size", "16", "--gradient_accumulation_steps", "2"]
    rc, _, err = _dry(capsys, RECIPES / "qwen2_5_vl_7b.yaml", *ZERO3, "--num-processes", "4", *old)
    assert rc == 1
    assert "takes 128 completions and a rollout gives 10 updates, the recipe on 8 gives 640 and 2" in err
    rc, _, err = _dry(capsys, RECIPES / "sft_qwen2_5_vl_7b.yaml", *ZERO3, "--num-processes", "4")
    assert rc == 1 and "takes 64 examples, the recipe on 8 takes 128" in err


def test_defect_5_image_bounds_unset_or_not_applied_by_the_processor(tmp_path, capsys, monkeypatch):
    rc, _, err = _dry(capsys, _broken(tmp_path, min_pixels=None, max_pixels=None), *ZERO3)
    assert rc == 1 and "image tokens would vary with each chip" in err
    import urp_train.models

    # The old way of passing the bounds (size=), which the checkpoint's stored min/max_pixels overwrite:
    monkeypatch.setattr(urp_train.models, "pixel_kwargs",
                        lambda pixels: {"size": {"shortest_edge": pixels[0], "longest_edge": pixels[1]}})
    rc, _, err = _dry(capsys, RECIPES / "qwen2_5_vl_7b.yaml", *ZERO3)
    assert rc == 1 and "resizes to 3136-12845056 pixels, not the recipe's" in err


def test_defect_6_pools_of_one_prompt(tmp_path, capsys, tiny_build, tiny_model_dir):
    rc, _, err = _dry(capsys, _broken(tmp_path, prompts_per_group=1), *ZERO3)
    assert rc == 1 and "lets a (group, indicator) pool hold one prompt" in err
    demo = _broken(tmp_path, "demo.yaml", build_dir=str(tiny_build), max_examples=None)
    rc, out, err = _dry(capsys, demo, model=tiny_model_dir)  # pools measured on a real split with the sampler
    assert rc == 0, err
    line = next(x for x in out.splitlines() if x.startswith("prompts per pool and rollout"))
    assert line.startswith("prompts per pool and rollout: min 2, median 2 (6 (group, indicator) pools")
    assert "text measured on 20 prompts" in out


def test_defect_8_float32_under_zero3_is_refused_by_the_plan_and_the_run(tmp_path, capsys, monkeypatch):
    broken = _broken(tmp_path, dtype="float32")
    rc, _, err = _dry(capsys, broken, *ZERO3)
    assert rc == 1 and "dtype float32 does nothing under DeepSpeed ZeRO-3" in err
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # what `accelerate launch` sets for zero3.yaml
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    assert main(["grpo", "--config", str(broken), "--use_cpu", "true", "--bf16", "false"]) == 1
    assert "dtype float32 does nothing under DeepSpeed ZeRO-3" in capsys.readouterr().err
