"""Two GRPO steps with vLLM colocated on the CPU, watched from outside; run by test_vllm_grpo.py in its own process.

vLLM's colocate mode initialises torch.distributed in the process that trains, so the check runs
apart from the test session. It wraps (does not replace) TRL's generation and weight sync to record
what they did, and writes a JSON report: ``python tests/vllm_grpo_check.py BUILD MODEL OUT``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def varied(prompts, completions, **_):
    """A reward that differs between completions of the random model, so advantages are not all zero."""
    from urp_train.rewards import completion_text

    return [float(sum(map(ord, completion_text(c))) % 7) / 7 for c in completions]


def _pairs(policy, engine) -> list[tuple[str, object, object]]:
    """(name, policy tensor, vLLM tensor) for tensors that vLLM keeps 1:1 or stacks (q, k, v -> qkv)."""
    import torch

    hf = dict(policy.named_parameters())
    out = []
    for name, param in engine.named_parameters():
        for layer in ("layers.1", "blocks.0"):
            if f"{layer}." not in name:
                continue
            tail = name.split(f"{layer}.", 1)[1]
            tower = "language_model" if layer.startswith("layers") else "visual"
            match = [k for k in hf if tower in k and k.endswith(f"{layer}.{tail}")]
            if tail.endswith("qkv_proj.weight") and tower == "language_model":
                parts = [next(k for k in hf if tower in k and k.endswith(f"{layer}.{tail.replace('qkv_proj', p)}"))
                         for p in ("q_proj", "k_proj", "v_proj")]
                out.append((name, torch.cat([hf[p] for p in parts]), param))
            elif len(match) == 1 and hf[match[0]].shape == param.shape:
                out.append((name, hf[match[0]], param))
    return out


def main(build: str, model: str, out: str) -> None:
    import functools

    import torch
    from trl.generation import vllm_generation
    from urp_train.dataset import URPDataArguments, load_data
    from urp_train.models import URPModelConfig
    from urp_train.rewards import reward_funcs
    from urp_train.trainer import URPGRPOConfig, URPGRPOTrainer

    args = URPGRPOConfig(output_dir=str(Path(out) / "run"), use_cpu=True, bf16=False, seed=0, max_steps=2,
                         per_device_train_batch_size=4, num_generations=4, max_completion_length=8,
                         learning_rate=1e-2, beta=0.0, reward_funcs=["accuracy", "format"],
                         advantage_grouping="prompt", remove_unused_columns=False,
                         logging_steps=1, save_strategy="no", report_to="none", use_vllm=True,
                         vllm_mode="colocate", vllm_max_model_length=1024, vllm_gpu_memory_utilization=0.2,
                         vllm_enable_sleep_mode=False)
    train, _ = load_data(URPDataArguments(build_dir=build, split="train", max_examples=8), args.seed)
    policy, processor = URPModelConfig(model_name_or_path=model, dtype="float32", min_pixels=12544,
                                       max_pixels=12544).load()
    rewards = [*reward_funcs(["accuracy", "format"], scale=5.0), varied]
    args.reward_weights = None
    # Eager vLLM, in this harness only: TRL builds the colocated LLM without an eager switch, and
    # torch.compile of the tiny model costs about half a minute of start-up on 2 cores. The check is
    # about generation and weight sync, which compile does not change; the recipes keep TRL's default.
    vllm_generation.LLM = functools.partial(vllm_generation.LLM, enforce_eager=True)  # type: ignore[attr-defined]
    trainer = URPGRPOTrainer(model=policy, args=args, train_dataset=train, processing_class=processor,
                             reward_funcs=rewards)
    gen = trainer.vllm_generation
    engine = gen.llm.llm_engine.model_executor.driver_worker.model_runner.model
    initial = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    report: dict = {"syncs": [], "vllm_calls": 0, "hf_generate_calls": 0,
                    "mm_processor_kwargs": gen.llm.llm_engine.model_config.multimodal_config.mm_processor_kwargs}

    sync, generate, hf_generate = gen.sync_weights, gen.generate, trainer.model.generate

    def checked_sync() -> None:
        sync()
        pairs = _pairs(trainer.model, engine)
        report["syncs"].append({
            # vLLM computes in its own dtype ("auto": half precision for a float32 checkpoint); the sync casts
            "unequal": [n for n, a, b in pairs if not torch.equal(a.detach().to(b.dtype), b.detach())],
            "compared": len(pairs), "vllm_dtype": str(pairs[0][2].dtype),
            "policy_moved": any(not torch.equal(initial[n], p) for n, p in trainer.model.named_parameters()),
        })

    def counted_generate(*a, **k):
        report["vllm_calls"] += 1
        return generate(*a, **k)

    def counted_hf_generate(*a, **k):
        report["hf_generate_calls"] += 1
        return hf_generate(*a, **k)

    gen.sync_weights, gen.generate, trainer.model.generate = checked_sync, counted_generate, counted_hf_generate
    trainer.train()
    report["log"] = [e for e in trainer.state.log_history if "loss" in e]
    report["advantages"] = list(trainer._logs["advantages"])
    Path(out, "report.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:4])
