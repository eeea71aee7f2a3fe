"""GPU-only paths: a bf16 mixed-precision GRPO step that learns, vLLM generation in colocate and server mode.

The model is loaded as the 7B recipes load it: fp32 master weights, bf16 compute (``bf16=True``), as
EasyR1 trains its actor. Skipped without CUDA.
"""

import os
import shutil
import socket
import subprocess
import time

import pytest
import torch
from urp_train.dataset import load_examples
from urp_train.rewards import completion_text, reward_funcs
from urp_train.trainer import URPGRPOConfig, URPGRPOTrainer

pytestmark = [pytest.mark.cuda, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def length(prompts, completions, **_):
    """A reward that differs between random completions (their length in characters), so that the
    group-wise advantages are not all zero and the step has a gradient to follow."""
    return [len(completion_text(c)) / 64 for c in completions]


def _trainer(build, model_dir, out, **overrides):
    from urp_train.models import load_model_and_processor

    model, processor = load_model_and_processor(model_dir, dtype="float32")
    args = URPGRPOConfig(output_dir=str(out), per_device_train_batch_size=4, num_generations=2,
                         max_completion_length=8, max_steps=1, report_to="none", save_strategy="no",
                         logging_steps=1, bf16=True, learning_rate=1e-3, advantage_grouping="group",
                         reward_weights=[1.0, 0.5], **overrides)
    return URPGRPOTrainer(model=model, processing_class=processor, args=args,
                          reward_funcs=[reward_funcs(["accuracy"])[0], length],
                          train_dataset=load_examples(build, "train"))


def _train_one_step(build, model_dir, out, **overrides):
    trainer = _trainer(build, model_dir, out, **overrides)
    trainer.train()
    return trainer


def test_bf16_step_on_gpu_has_advantages_and_changes_every_parameter(tiny_build, tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_build, tiny_model_dir, tmp_path)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    params = dict(trainer.model.named_parameters())
    assert next(iter(params.values())).device.type == "cuda"
    assert {p.dtype for p in params.values()} == {torch.float32}  # master weights
    assert trainer.accelerator.mixed_precision == "bf16"  # compute
    advantages = torch.tensor(list(trainer._logs["advantages"]))
    assert advantages.abs().sum() > 0, "every advantage was zero: the step had nothing to learn from"
    unchanged = [n for n, p in params.items() if n in before and torch.equal(before[n], p.detach())]
    assert unchanged == [], f"{len(unchanged)} of {len(before)} parameters did not change: {unchanged[:3]}"
    log = trainer.state.log_history[0]
    assert "loss" in log and log["rewards/length/std"] > 0


def test_vllm_colocate_generation(tiny_build, tiny_model_dir, tmp_path):
    pytest.importorskip("vllm")
    trainer = _train_one_step(tiny_build, tiny_model_dir, tmp_path, use_vllm=True, vllm_mode="colocate",
                              vllm_gpu_memory_utilization=0.2, vllm_enable_sleep_mode=False)
    assert trainer.state.log_history[0]["completions/mean_length"] > 0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="server mode needs a GPU for vLLM and one for training")
def test_vllm_server_generation(tiny_build, tiny_model_dir, tmp_path):
    pytest.importorskip("vllm")
    trl = shutil.which("trl")
    assert trl is not None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([trl, "vllm-serve", "--model", str(tiny_model_dir), "--port", str(port),
                               "--gpu_memory_utilization", "0.2"],
                              env={**os.environ, "CUDA_VISIBLE_DEVICES": "1"})
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(2)
        trainer = _train_one_step(tiny_build, tiny_model_dir, tmp_path, use_vllm=True, vllm_mode="server",
                                  vllm_server_base_url=f"http://127.0.0.1:{port}")
        assert trainer.state.log_history[0]["completions/mean_length"] > 0
    finally:
        server.terminate()
        server.wait(timeout=60)
