"""The shipped 7B recipes: valid keys, and the paper's EasyR1 batch sizes translated into TRL's units."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from urp_train.dataset import URPDataArguments
from urp_train.models import URPModelConfig
from urp_train.trainer import URPGRPOConfig

RECIPES = Path(__file__).resolve().parents[3] / "configs" / "train"
GPUS = 8  # the recipes' comments assume one node of 8 GPUs
PAPER_PROMPTS_PER_ROLLOUT, PAPER_PROMPTS_PER_UPDATE = 256, 128  # EasyR1 counts prompts


def _load(name: str) -> dict:
    return yaml.safe_load((RECIPES / name).read_text())


@pytest.mark.parametrize("name", ["qwen2_5_vl_7b.yaml", "qwen2_5_vl_7b_prompt_grouping.yaml"])
def test_recipe_keys_exist_and_batches_match_the_paper_in_prompts(name):
    r = _load(name)
    known = {f.name for cls in (URPGRPOConfig, URPDataArguments, URPModelConfig) for f in dataclasses.fields(cls)}
    assert sorted(set(r) - known) == []
    n = r["num_generations"]
    assert r["generation_batch_size"] == PAPER_PROMPTS_PER_ROLLOUT * n
    assert r["per_device_train_batch_size"] * GPUS * r["gradient_accumulation_steps"] == PAPER_PROMPTS_PER_UPDATE * n
    assert r["generation_batch_size"] % (r["per_device_train_batch_size"] * GPUS) == 0


def test_the_ablation_differs_only_in_advantage_grouping():
    main, ablation = _load("qwen2_5_vl_7b.yaml"), _load("qwen2_5_vl_7b_prompt_grouping.yaml")
    assert main["advantage_grouping"] == "group" and ablation["advantage_grouping"] == "prompt"
    differ = {k for k in set(main) | set(ablation) if main.get(k) != ablation.get(k)}
    assert differ == {"advantage_grouping", "prompts_per_group", "output_dir"}


def test_grouped_recipe_is_a_valid_config_on_this_machine(tmp_path):
    r = _load("qwen2_5_vl_7b.yaml")
    fields = {f.name for f in dataclasses.fields(URPGRPOConfig)}
    kwargs = {k: v for k, v in r.items() if k in fields and k not in ("bf16", "use_vllm", "gradient_checkpointing")}
    kwargs.update(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=r["per_device_train_batch_size"]
                  * GPUS)  # one process standing in for 8
    cfg = URPGRPOConfig(**kwargs)
    assert cfg.steps_per_generation * cfg.per_device_train_batch_size == r["generation_batch_size"]
    assert (cfg.generation_batch_size // cfg.num_generations) % cfg.prompts_per_group == 0


@pytest.mark.parametrize("name", ["qwen2_5_vl_7b.yaml", "qwen2_5_vl_7b_prompt_grouping.yaml",
                                  "sft_qwen2_5_vl_7b.yaml"])
def test_gpu_recipes_compute_in_bf16_with_fp32_master_weights_kept_by_deepspeed(name):
    """EasyR1 keeps the actor's master weights in fp32 and computes in bf16; weights stored in bf16 lose updates.

    At the recipes' learning rate the first AdamW step moves each weight by about lr = 1e-6, far below
    bf16's spacing near a typical weight (0.01 -> 6e-5), so a bf16 copy rounds the step away. Under
    ZeRO-3, zero.Init stores the model's weights in bf16 whatever dtype says, and DeepSpeed's optimiser
    keeps the fp32 master copy: the recipes say dtype bfloat16 (float32 would do nothing; it is refused).
    """
    import torch

    r = _load(name)
    assert (r["dtype"], r["bf16"]) == ("bfloat16", True)
    zero3 = yaml.safe_load((RECIPES.parent / "accelerate" / "zero3.yaml").read_text())
    assert (zero3["distributed_type"], zero3["deepspeed_config"]["zero_stage"]) == ("DEEPSPEED", 3)
    assert "--config_file configs/accelerate/zero3.yaml" in (RECIPES / name).read_text()
    weight = torch.tensor(0.01)
    step = torch.tensor(r["learning_rate"])
    assert (weight - step).bfloat16() == weight.bfloat16()  # the update vanishes in bf16 ...
    assert weight - step != weight  # ... and survives in DeepSpeed's fp32 master copy
