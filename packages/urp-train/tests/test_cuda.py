"""GPU-only paths: a bf16 step, vLLM generation in colocate and server mode. Skipped without CUDA."""

import os
import shutil
import socket
import subprocess
import time

import pytest
import torch
from urp_train.dataset import load_examples
from urp_train.rewards import reward_funcs
from urp_train.trainer import URPGRPOConfig, URPGRPOTrainer

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _train_one_step(build, model_dir, out, **overrides):
    from urp_train.models import load_model_and_processor

    model, processor = load_model_and_processor(model_dir, dtype="bfloat16")
    args = URPGRPOConfig(output_dir=str(out), per_device_train_batch_size=4, num_generations=2,
                         max_completion_length=8, max_steps=1, report_to="none", save_strategy="no",
                         logging_steps=1, bf16=True, learning_rate=1e-3, advantage_grouping="group",
                         reward_weights=[1.0, 0.5], **overrides)
    trainer = URPGRPOTrainer(model=model, processing_class=processor, args=args,
                             reward_funcs=reward_funcs(args.reward_funcs),
                             train_dataset=load_examples(build, "train"))
    trainer.train()
    return trainer


def test_bf16_step_on_gpu(tiny_build, tiny_model_dir, tmp_path):
    trainer = _train_one_step(tiny_build, tiny_model_dir, tmp_path)
    assert next(trainer.model.parameters()).device.type == "cuda"
    assert next(trainer.model.parameters()).dtype == torch.bfloat16
    assert "loss" in trainer.state.log_history[0]


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
