"""GRPO's server mode on vLLM's CPU build: `trl vllm-serve` on 127.0.0.1 and the request path the trainer uses.

TRL 1.16 moves weights to the server over vLLM's NCCL weight-transfer engine, which needs CUDA
(``VLLMClient.init_communicator`` refuses a CPU device), so on this machine only generation is
tested: the server started with the README's flags (image bounds included), images processed
server-side and completions generated from token ids, as ``VLLMGeneration`` does in server mode.
"""

from __future__ import annotations

import io
import os
import shutil
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
    trl = shutil.which("trl")
    assert trl is not None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [trl, "vllm-serve", "--model", str(tiny_model_dir), "--host", "127.0.0.1", "--port", str(port),
             "--max_model_len", "1024", "--mm-processor-kwargs", '{"min_pixels": 12544, "max_pixels": 12544}'],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "NO_PROXY": "127.0.0.1"})  # 1 GiB of KV cache
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
    ids = proc.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, images=[im[0] for im in images[:1]],
                                   return_dict=True)["input_ids"]
    ids = ids[0] if isinstance(ids[0], list) else ids
    pad = proc.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert ids.count(pad) == 16  # 112 x 112 px: the bounds the server was started with give the same count
    out = server.generate([list(ids), list(ids)], features=features, n=2, max_tokens=4, temperature=1.0)
    assert len(out["completion_ids"]) == 4 and all(len(c) == 4 for c in out["completion_ids"])
    assert all(len(lp) == 4 for lp in out["logprobs"])  # the sampled tokens' log-probabilities come back
