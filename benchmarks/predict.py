"""Samples per second of `urp-eval predict`'s two model backends, transformers and vLLM, in one run.

Same tiny offline Qwen2.5-VL, same prompts (the first ``--prompts`` samples of the build's unseen
split, one indicator), ``--samples`` completions per prompt at temperature 1, exactly
``--tokens`` new tokens each (no stop token, so both backends do the same work). Each backend runs
in its own process, one after the other; the model's load and vLLM's start-up are timed apart
from generation, which is what the figure is about.

    uv run python benchmarks/predict.py --build build/demo [--model models/tiny-qwen2.5-vl]

Prints one row per backend (seconds, samples/s) and the ratio, with the machine's CPU model (and
GPU, where CUDA is available).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time


def run_once(backend: str, build: str, model: str, prompts: int, samples: int, tokens: int) -> dict:
    """Load the backend, generate once to warm up, then time one generation of every prompt."""
    import io

    import pyarrow.parquet as pq
    from PIL import Image
    from urp_data.contract import load_manifest, render_messages, split_path
    from urp_eval.config import PredictConfig
    from urp_eval.generators import make_generator

    t0 = time.perf_counter()
    cfg = PredictConfig(data=build, backend=backend, model=model, samples_per_prompt=samples, temperature=1.0,
                        max_new_tokens=tokens, batch_size=prompts)
    gen = make_generator(cfg)
    if backend == "vllm":  # exactly `tokens` new tokens, as transformers' min_new_tokens below
        gen.params.min_tokens = tokens  # type: ignore[attr-defined]
        gen.params.ignore_eos = True  # type: ignore[attr-defined]
    else:
        gen.model.generation_config.min_new_tokens = tokens  # type: ignore[attr-defined]
    load = time.perf_counter() - t0
    manifest = load_manifest(build)
    ind = next(iter(manifest.indicators))
    rows = pq.read_table(split_path(build, "test_unseen")).slice(0, prompts).to_pylist()
    messages = [render_messages(r, ind, spec=manifest.indicators[ind].spec()) for r in rows]
    images = [Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB") for r in rows]
    gen.generate(messages[:2], images[:2])  # warm-up
    t0 = time.perf_counter()
    out = gen.generate(messages, images)
    seconds = time.perf_counter() - t0
    assert len(out) == prompts and all(len(c) == samples for c in out)
    return {"backend": backend, "load_s": load, "seconds": seconds, "samples_per_s": prompts * samples / seconds}


def _machine() -> str:
    import os
    from pathlib import Path

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())

    import torch

    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {os.cpu_count()} CPUs{gpu}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="build/demo")
    parser.add_argument("--model", default="models/tiny-qwen2.5-vl")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: one backend in this process
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_once(args.run, args.build, args.model, args.prompts, args.samples, args.tokens)))
        return
    rows = []
    for backend in ("transformers", "vllm"):
        proc = subprocess.run([sys.executable, __file__, "--run", backend, "--build", args.build, "--model",
                               args.model, "--prompts", str(args.prompts), "--samples", str(args.samples),
                               "--tokens", str(args.tokens)], capture_output=True, text=True, check=False)
        if proc.returncode:
            raise SystemExit(f"{backend} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(next(line for line in reversed(proc.stdout.splitlines()) if line.startswith("{"))))
    print(f"{args.prompts} prompts x {args.samples} samples x {args.tokens} tokens; {_machine()}")
    print(f"{'backend':<14}{'load s':>9}{'generate s':>12}{'samples/s':>11}")
    for r in rows:
        print(f"{r['backend']:<14}{r['load_s']:>9.1f}{r['seconds']:>12.2f}{r['samples_per_s']:>11.2f}")
    print(f"vLLM / transformers: {rows[1]['samples_per_s'] / rows[0]['samples_per_s']:.2f}x")


if __name__ == "__main__":
    main()
