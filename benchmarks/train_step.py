"""Seconds per GRPO step and peak memory: URPGRPOTrainer vs TRL's GRPOTrainer, side by side.

Same tiny offline Qwen2.5-VL, same recipe (configs/train/demo.yaml values), same examples; the
URP trainer runs with per-group reward logging, once with TRL's per-prompt advantages and once
with group-wise advantages and the grouped sampler. Each run is its own
process (so peak memory is that run's own), and the two trainers alternate for ``--repeats``
rounds so that load from other users of the machine hits both alike.

    uv run python benchmarks/train_step.py --build build/demo [--model models/tiny-qwen2.5-vl]

Peak memory is the process's peak resident set size on CPU (ru_maxrss), or the peak CUDA
memory allocated on a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAINERS = ("GRPOTrainer", "URPGRPOTrainer:prompt", "URPGRPOTrainer:group")
"""TRL's trainer; ours with TRL's per-prompt grouping (same prompts and completions as TRL's, so the
difference is the hooks' cost); ours with group-wise advantages and the grouped sampler."""


def run_once(kind: str, build: str, model: str, steps: int, out: str, threads: int | None) -> dict:
    """Train ``steps`` + 1 steps with one trainer; seconds of every step after the first, and peak memory."""
    import resource

    import torch
    from trl import GRPOTrainer
    from urp_train import trainer as trainer_module
    from urp_train.dataset import load_examples
    from urp_train.models import load_model_and_processor
    from urp_train.rewards import reward_funcs
    from urp_train.trainer import URPGRPOConfig, URPGRPOTrainer

    if threads:
        torch.set_num_threads(threads)

    cuda = torch.cuda.is_available()
    model_obj, processor = load_model_and_processor(model, dtype="bfloat16" if cuda else "float32")
    data = load_examples(build, "train").shuffle(seed=0).select(range(64))
    urp = kind.startswith("URPGRPOTrainer")
    grouping = kind.split(":")[1] if urp else "prompt"
    args = URPGRPOConfig(
        output_dir=out, use_cpu=not cuda, bf16=cuda, seed=42, max_steps=steps + 1, per_device_train_batch_size=4,
        num_generations=2, max_completion_length=16, learning_rate=1e-5, beta=0.0, logging_steps=1,
        save_strategy="no", report_to="none", reward_weights=[1.0, 0.5],
        advantage_grouping=grouping, prompts_per_group=2,
        reward_log_column="group" if urp else None,
    )
    trainer_cls = URPGRPOTrainer if urp else GRPOTrainer
    trainer = trainer_cls(model=model_obj, processing_class=processor, args=args, train_dataset=data,
                          reward_funcs=reward_funcs(args.reward_funcs))
    own = [0.0]  # seconds spent in the subclass's own work (not in the super() calls it wraps)

    def timed(fn):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                own[0] += time.perf_counter() - start
        return wrapper

    if urp:
        trainer_module.grouped_advantages = timed(trainer_module.grouped_advantages)
        trainer._log_rewards_by = timed(trainer._log_rewards_by)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    times = [e["step_time"] for e in trainer.state.log_history if "step_time" in e]
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"kind": kind, "step_s": times[1:], "own_s_per_step": own[0] / len(times), "peak_mib": peak / 2**20,
            "device": "cuda" if cuda else "cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="build/demo", help="build folder (urp-data build --region demo)")
    parser.add_argument("--model", default=None, help="tiny model folder; built in a temporary folder if unset")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run (after one warm-up step)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the three trainers")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per run (1 avoids OpenMP spin-waiting on a shared machine)")
    parser.add_argument("--_child", choices=TRAINERS, help=argparse.SUPPRESS)
    parser.add_argument("--_out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        print(json.dumps(run_once(args._child, args.build, args.model, args.steps, args._out, args.threads)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from urp_train.models import build_tiny_model

            model = str(build_tiny_model(Path(tmp) / "tiny"))
        results: dict[str, list[dict]] = {k: [] for k in TRAINERS}
        for _ in range(args.repeats):
            for kind in TRAINERS:
                proc = subprocess.run(
                    [sys.executable, __file__, "--build", args.build, "--model", model, "--steps", str(args.steps),
                     "--_child", kind, "--_out", str(Path(tmp) / kind),
                     *(["--threads", str(args.threads)] if args.threads else [])],
                    capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    sys.exit(f"{kind} run failed:\n{proc.stderr[-3000:]}")
                results[kind].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    rows = {}
    for kind, runs in results.items():
        steps = [s for r in runs for s in r["step_s"]]
        own = statistics.mean(r["own_s_per_step"] for r in runs)
        rows[kind] = (statistics.median(steps), statistics.mean(steps), max(r["peak_mib"] for r in runs), own)
    device = results[TRAINERS[0]][0]["device"]
    print(f"GRPO step, tiny Qwen2.5-VL on {device} ({args.threads or 'default'} threads): {args.repeats} x "
          f"{args.steps} timed steps per trainer, 4 completions (2 prompts x 2) of 16 tokens per step")
    print(f"{'trainer':<22}{'median s/step':>15}{'mean s/step':>13}{'peak MiB':>10}{'vs TRL':>9}"
          f"{'own ms/step':>13}{'own share':>11}")
    base = rows["GRPOTrainer"][0]
    for kind, (med, mean, peak, own) in rows.items():
        print(f"{kind:<22}{med:>15.3f}{mean:>13.3f}{peak:>10.0f}{100 * (med / base - 1):>+8.1f}%"
              f"{1000 * own:>13.2f}{100 * own / med:>10.3f}%")
    print("vs TRL: median step time against GRPOTrainer's (wall clock, includes the machine's noise); "
          "own: time inside the subclass's added code (group advantages, per-group logs) per step")


if __name__ == "__main__":
    main()
