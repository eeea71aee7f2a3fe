"""The training preflight: ``urp-train grpo|sft --config R --dry-run``, a plan for the target machine.

A 7B run fails late and expensively: after minutes of loading, at vLLM's KV-cache check, at the
first weight sync, or never, by silently training with other batch sizes than the recipe states.
The preflight reads only configurations (the recipe, the model's ``config.json``, its
``preprocessor_config.json``, an accelerate config and, when present, the build's split files
without their images), never weights, and runs without a GPU because it plans for the target.
It prints the plan and raises :class:`PreflightError` (one line, exit 1) on anything that would
crash or depart from the recipe's intent. The intent is the recipe as written on the process count
of its accelerate config: other process counts and flags must keep its completions per optimiser
step and updates per rollout.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shlex
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

GIB = 2**30
TEXT_ALLOWANCE_TOKENS = 512
"""Ours: prompt text tokens assumed when the build is absent (the demo's prompts hold ~150-250)."""
VLLM_PROFILE_GIB = 2.0
"""Ours, rough: what vLLM's start-up profiling pass takes beside weights and KV cache (activations of
its 4096 batched tokens and the sampler's logits over a 152k vocabulary)."""
SERVER_GPU_MEMORY_UTILIZATION = 0.9  # `trl vllm-serve`'s default
ATTENTION_PACKAGES = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}
QWEN_VL_TYPES = ("qwen2_5_vl", "qwen2_vl")


class PreflightError(ValueError):
    """What would crash or depart from the recipe, and the fix, in one line."""


@dataclass(frozen=True)
class Target:
    """The machine the plan is for."""

    processes: int  # training processes, one per GPU
    reference_processes: int  # the process count the recipe is written for (its accelerate config's)
    zero_stage: int  # DeepSpeed ZeRO stage; 0 = plain data parallelism
    gpu_memory_gib: float  # memory of one GPU

    @classmethod
    def from_flags(cls, accelerate_config: str | None, processes: int | None, gpu_memory_gib: float) -> Target:
        cfg = yaml.safe_load(Path(accelerate_config).read_text()) if accelerate_config else {}
        stage = int(cfg.get("deepspeed_config", {}).get("zero_stage", 0)) \
            if cfg.get("distributed_type") == "DEEPSPEED" else 0
        reference = int(cfg.get("num_processes", 1))
        return cls(processes or reference, reference, stage, gpu_memory_gib)


def zero_stage_from_env() -> int:
    """The DeepSpeed ZeRO stage ``accelerate launch`` started this process with; 0 without DeepSpeed.

    Under ZeRO, DeepSpeed's optimiser keeps fp32 master copies of the weights it updates, whatever
    dtype the model is stored in.
    """
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true":
        return 0
    return int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") or 0)


def zero3_dtype_error(dtype: str | None, zero_stage: int) -> str | None:
    """Why ``dtype: float32`` under ZeRO-3 is refused, or None."""
    if zero_stage == 3 and dtype == "float32":
        return ("dtype float32 does nothing under DeepSpeed ZeRO-3: zero.Init stores the weights in bf16 and "
                "DeepSpeed's optimiser keeps the fp32 master copy; set dtype: bfloat16")
    return None


def attention_error(attn_implementation: str | None) -> str | None:
    """Why the attention implementation would fail to import at model load, or None."""
    package = ATTENTION_PACKAGES.get(attn_implementation or "")
    if attn_implementation and "/" in attn_implementation:  # a hub kernel such as kernels-community/...
        package = "kernels"
    if package is None or importlib.util.find_spec(package) is not None:
        return None
    return (f"attn_implementation {attn_implementation} needs the {package} package, which is not installed "
            "(nor in uv.lock, so uv sync removes it); use sdpa")


def batches(args: Any, processes: int, explicit_generation_batch: bool) -> tuple[int, int, float]:
    """(completions per optimiser step, completions per rollout, optimiser updates per rollout) of GRPO.

    As TRL computes them on ``processes`` processes: a rollout is ``generation_batch_size`` when the
    recipe sets it, else ``per_device_train_batch_size x processes x steps_per_generation``.
    """
    micro = args.per_device_train_batch_size * processes
    rollout = args.generation_batch_size if explicit_generation_batch else micro * args.steps_per_generation
    if rollout % micro or rollout % args.num_generations:
        raise PreflightError(f"a rollout of {rollout} completions is not a multiple of per_device_train_batch_size x "
                             f"processes = {micro} and of num_generations {args.num_generations}; TRL refuses it")
    step = micro * args.gradient_accumulation_steps
    return step, rollout, rollout // micro * args.num_iterations / args.gradient_accumulation_steps


def _check_intent(command: str, args: Any, reference: Any, target: Target, explicit: bool) -> list[str]:
    """Plan lines for the batch sizes; raise when they differ from the recipe's on its own process count."""
    n, ref = target.processes, target.reference_processes
    if command == "sft":
        step = args.per_device_train_batch_size * n * args.gradient_accumulation_steps
        want = reference.per_device_train_batch_size * ref * reference.gradient_accumulation_steps
        if step != want:
            raise PreflightError(f"on {n} processes an optimiser step takes {step} examples, the recipe on {ref} "
                                 f"takes {want}; set per_device_train_batch_size x gradient_accumulation_steps "
                                 f"= {want / n:g}")
        return [f"examples per optimiser step: {step}"]
    step, rollout, updates = batches(args, n, explicit)
    want_step, _, want_updates = batches(reference, ref, explicit)
    if (step, updates) != (want_step, want_updates):
        accumulation = want_step / (args.per_device_train_batch_size * n)
        raise PreflightError(f"on {n} processes an optimiser step takes {step} completions and a rollout gives "
                             f"{updates:g} updates, the recipe on {ref} gives {want_step} and {want_updates:g}; "
                             f"set gradient_accumulation_steps {accumulation:g} (and keep generation_batch_size)")
    g = args.num_generations
    return [f"prompts per optimiser step: {step // g} ({step} completions, {g} per prompt)",
            f"prompts per rollout: {rollout // g} ({rollout} completions); updates per rollout: {updates:g}"]


def _build_facts(data_args: Any, seed: int, column: str | None) -> dict[str, Any] | None:
    """Chip size, examples' pool keys and rendered prompts of the recipe's build, or None if it is absent."""
    import pyarrow.parquet as pq
    from urp_data.contract import load_manifest, render_messages, split_path

    from urp_train.dataset import chip_size, iter_examples

    build = Path(data_args.build_dir)
    if not (build / "manifest.json").is_file():
        return None
    manifest = load_manifest(build)
    examples = list(iter_examples(build, data_args.split, data_args.train_indicators, with_images=False))
    if data_args.max_examples is not None and data_args.max_examples < len(examples):
        import datasets  # load_data's seeded subset: the same permutation

        keep = datasets.Dataset.from_dict({"i": list(range(len(examples)))}).shuffle(seed=seed)
        examples = [examples[i] for i in keep.select(range(data_args.max_examples))["i"]]
    if not examples:
        raise PreflightError(f"no example with a non-null target in split {data_args.split!r} of {build}")
    size = None
    if data_args.drop != "image":
        first = next(pq.ParquetFile(split_path(build, "train")).iter_batches(batch_size=1, columns=["image"]))
        size = chip_size(first.column("image")[0].as_py())
    return {
        "chip": size,
        "keys": [(row[column], ind) for row, ind in examples] if column else [],
        "prompts": [render_messages(row, ind, spec=manifest.indicators[ind].spec(), drop=data_args.drop)
                    for row, ind in examples],
    }


def _pool_lines(args: Any, facts: dict[str, Any] | None, rollout_prompts: int, build_dir: str) -> list[str]:
    """Prompts per advantage pool in each rollout (min, median), simulated with the trainer's sampler."""
    from urp_train.trainer import PROMPT, GroupedRepeatSampler, merge_single_prompt_pools

    if args.advantage_grouping == PROMPT:
        return ["advantage pools: each prompt's completions (TRL's GRPO): 1 prompt per pool"]
    if args.prompts_per_group < 2:
        raise PreflightError(f"prompts_per_group {args.prompts_per_group} lets a ({args.advantage_grouping}, "
                             "indicator) pool hold one prompt in a rollout, i.e. per-prompt GRPO; set it to 2 or more")
    if facts is None:
        return [(f"prompts per pool: not measured (build {build_dir} absent); at least "
                f"{args.prompts_per_group} per pool by construction")]
    pools = merge_single_prompt_pools(facts["keys"])
    pooled = [pools[k] for k in facts["keys"]]
    order = list(GroupedRepeatSampler(pooled, args.prompts_per_group, 1, rollout_prompts, seed=args.seed))
    sizes = [n for b in range(0, len(order), rollout_prompts)
             for n in Counter(pooled[i] for i in set(order[b:b + rollout_prompts])).values()]
    if not sizes:
        raise PreflightError(f"the split holds {len(pooled)} examples, fewer than one rollout of "
                             f"{rollout_prompts} prompts; lower generation_batch_size")
    merged = sum(1 for k, v in pools.items() if k != v)
    if min(sizes) < 2:
        raise PreflightError(f"a rollout would hold a pool of one prompt (per-prompt GRPO for it); "
                             f"raise prompts_per_group above {args.prompts_per_group}")
    return [(f"prompts per pool and rollout: min {min(sizes)}, median {statistics.median(sizes):g} "
            f"({len(pools)} (group, indicator) pools; {merged} with one prompt merged per indicator)")]


def _prompt_tokens(model_args: Any, image_processor: Any, facts: dict[str, Any] | None,
                   drop: str | None) -> tuple[int, int, str]:
    """(image tokens per prompt, longest prompt in tokens, how the text was measured)."""
    from urp_train.models import image_tokens, tiny_processor

    image = 0
    if drop != "image":
        size = image_processor.size
        bounds = (size["shortest_edge"], size["longest_edge"])
        if model_args.pixels != bounds:
            raise PreflightError(f"the image processor resizes to {bounds[0]}-{bounds[1]} pixels, not the recipe's "
                                 f"min_pixels/max_pixels {model_args.pixels}; the checkpoint's stored bounds won")
        chip = facts["chip"] if facts else (math.isqrt(bounds[1]),) * 2
        image = image_tokens(chip[1], chip[0], *bounds, patch=image_processor.patch_size,
                             merge=image_processor.merge_size)
    if facts is None:
        return image, image + TEXT_ALLOWANCE_TOKENS, f"text assumed {TEXT_ALLOWANCE_TOKENS} tokens (build absent)"
    processor = tiny_processor()  # the Qwen2.5 vocabulary and chat template, offline
    texts = [processor.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in facts["prompts"]]
    lengths = [len(ids) for ids in processor.tokenizer(texts)["input_ids"]]
    one_slot = 0 if drop == "image" else 1  # the template writes one <|image_pad|> per image
    return image, max(lengths) - one_slot + image, f"text measured on {len(texts)} prompts"


def _states_gib(params: int, args: Any, model_args: Any, target: Target) -> dict[str, float]:
    """Parameters, gradients and optimiser state per GPU (GiB) for full fine-tuning with AdamW."""
    n = target.processes
    if target.zero_stage:  # DeepSpeed mixed precision: bf16 weights and grads, fp32 master + Adam moments
        p, g, o = (2, 2, 12) if args.bf16 else (4, 4, 8)
    else:
        p = 2 if model_args.dtype in ("bfloat16", "float16") else 4
        g, o = p, 2 * p
    if model_args.use_peft:
        g = o = 0  # only the (small) adapters train
    shards = {"parameters": target.zero_stage >= 3, "gradients": target.zero_stage >= 2,
              "optimiser state": target.zero_stage >= 1}
    return {k: params * b / (n if shards[k] else 1) / GIB for k, b in zip(shards, (p, g, o), strict=True)}


def _vllm_lines(args: Any, model_args: Any, config: Any, params: int, target: Target, rollout: int, longest: int,
                on_cpu: bool) -> tuple[list[str], float]:
    """The plan's lines for GRPO's vLLM generation (tensor parallel size, context, KV cache and its budget),
    and the GPU memory vLLM takes beside training, in GiB (its colocated share; 0 for a server)."""
    import torch

    lines: list[str] = []
    n, text, vllm_gib = target.processes, config.get_text_config(), 0.0
    colocate = args.vllm_mode == "colocate"
    tp = args.vllm_tensor_parallel_size if colocate else max(1, target.reference_processes - n)
    if text.num_attention_heads % tp or text.num_key_value_heads % tp:
        raise PreflightError(f"vLLM tensor parallel size {tp} does not divide the model's "
                             f"{text.num_attention_heads} heads and {text.num_key_value_heads} KV heads")
    max_len = args.vllm_max_model_length
    if max_len is None and not on_cpu:
        raise PreflightError(f"vllm_max_model_length is unset: vLLM sizes its KV cache for the model's "
                             f"{text.max_position_embeddings}-token context; set it to at least {longest}")
    if max_len is not None and max_len < longest:
        raise PreflightError(f"vllm_max_model_length {max_len} is shorter than the longest prompt plus "
                             f"max_completion_length ({longest} tokens); raise it")
    dtype = getattr(config, "dtype", None) or "bfloat16"
    dtype_bytes = torch.empty((), dtype=getattr(torch, dtype) if isinstance(dtype, str) else dtype).element_size()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    per_token = 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * dtype_bytes / tp
    seqs = tp * rollout // n if colocate else rollout  # TRL's max_num_seqs in colocate mode
    length = max_len or text.max_position_embeddings
    lines.append(f"vLLM ({args.vllm_mode}, tensor parallel {tp}): KV cache {length * per_token / GIB:.2f} GiB "
                 f"per {length}-token sequence, {seqs * length * per_token / GIB:.1f} GiB for {seqs} at once")
    if not on_cpu:
        util = args.vllm_gpu_memory_utilization if colocate else SERVER_GPU_MEMORY_UTILIZATION
        weights = params * dtype_bytes / tp / GIB
        budget = util * target.gpu_memory_gib - weights - VLLM_PROFILE_GIB
        lines.append(f"vLLM KV budget: {budget:.1f} GiB = {util} x {target.gpu_memory_gib:g} GiB - weights "
                     f"{weights:.1f} GiB - {VLLM_PROFILE_GIB:g} GiB profiling (ours)")
        if length * per_token / GIB > budget:
            raise PreflightError(f"vLLM's KV cache for one {length}-token sequence ({length * per_token / GIB:.1f}"
                                 f" GiB) exceeds its budget ({budget:.1f} GiB); raise vllm_gpu_memory_utilization"
                                 " or lower vllm_max_model_length")
        vllm_gib = util * target.gpu_memory_gib if colocate else 0.0
        if not colocate:
            lines.append("vLLM server: " + serve_command(model_args, tp, length))
    return lines, vllm_gib


def plan(command: str, args: Any, data_args: Any, model_args: Any, reference: Any, target: Target, *,
         explicit_generation_batch: bool, on_cpu: bool) -> list[str]:
    """The plan's lines; raises :class:`PreflightError` on the first thing that would fail."""
    import torch
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText

    from urp_train.models import pixel_kwargs

    n = target.processes
    lines = [(f"processes: {n} (recipe written for {target.reference_processes}); DeepSpeed ZeRO stage "
             f"{target.zero_stage or 'none (plain data parallelism)'}")]
    for error in (zero3_dtype_error(model_args.dtype, target.zero_stage), attention_error(model_args.attn_implementation)):
        if error:
            raise PreflightError(error)
    lines.append(f"attention: {model_args.attn_implementation or 'the model default (sdpa)'} imports")
    lines += _check_intent(command, args, reference, target, explicit_generation_batch)

    source = {"revision": model_args.model_revision, "trust_remote_code": args.trust_remote_code}
    config = AutoConfig.from_pretrained(model_args.model_name_or_path, **source)
    if config.model_type not in QWEN_VL_TYPES:
        raise PreflightError(f"the preflight plans Qwen2-VL-family models only, not {config.model_type}")
    if model_args.pixels is None or model_args.pixels[0] != model_args.pixels[1]:
        raise PreflightError(f"min_pixels/max_pixels {model_args.pixels}: image tokens would vary with each chip "
                             "(and vLLM would use the checkpoint's bounds); set them equal, e.g. 200704 = 448x448")
    image_processor = AutoImageProcessor.from_pretrained(model_args.model_name_or_path, **source,
                                                         **pixel_kwargs(model_args.pixels))
    grpo, rollout = command == "grpo", 0
    column = args.advantage_grouping if grpo and args.advantage_grouping != "prompt" else None
    facts = _build_facts(data_args, args.seed, column)
    image, prompt, measured = _prompt_tokens(model_args, image_processor, facts, data_args.drop)
    completion = args.max_completion_length if grpo else 16  # SFT: the answer, ~14 tokens with its end
    longest = prompt + completion
    lines.append(f"image tokens per prompt: {image} (min_pixels = max_pixels = {model_args.pixels[0]}; "
                 f"{'chips of the build' if facts else 'square chips assumed, build absent'})")
    lines.append(f"longest sequence: {longest} tokens = prompt {prompt} ({measured}) + completion {completion}")
    if grpo:
        _, rollout, _ = batches(args, n, explicit_generation_batch)
        lines += _pool_lines(args, facts, rollout // args.num_generations, data_args.build_dir)

    with torch.device("meta"):
        params = sum(p.numel() for p in AutoModelForImageTextToText.from_config(config).parameters())
    states = _states_gib(params, args, model_args, target)
    lines.append(f"parameters: {params / 1e9:.2f} B; per GPU: " + ", ".join(f"{k} {v:.1f} GiB" for k, v in states.items())
                 + " (activations not counted)")
    vllm_gib = 0.0
    if grpo and args.use_vllm:
        vllm_lines, vllm_gib = _vllm_lines(args, model_args, config, params, target, rollout, longest, on_cpu)
        lines += vllm_lines
    if not on_cpu and sum(states.values()) + vllm_gib > target.gpu_memory_gib:
        raise PreflightError(f"training states {sum(states.values()):.1f} GiB + vLLM's {vllm_gib:.1f} GiB exceed a "
                             f"{target.gpu_memory_gib:g} GiB GPU; use more processes, ZeRO-3 or a smaller vLLM share")
    return lines


def serve_command(model_args: Any, tensor_parallel: int, max_model_len: int) -> str:
    """The `trl vllm-serve` command whose settings match the training run (data parallel 1: a dense model)."""
    bounds = '{"min_pixels": %d, "max_pixels": %d}' % model_args.pixels  # noqa: UP031 -- JSON braces
    return shlex.join(["trl", "vllm-serve", "--model", model_args.model_name_or_path, "--tensor_parallel_size",
                       str(tensor_parallel), "--max_model_len", str(max_model_len), "--mm-processor-kwargs", bounds])


def check_serve_command(argv: Sequence[str], model_args: Any, max_model_len: int) -> None:
    """Raise if a `trl vllm-serve` command line (after ``vllm-serve``) departs from the training run."""
    import json

    from trl import TrlParser
    from trl.scripts.vllm_serve import ScriptArguments

    serve, extra = TrlParser(ScriptArguments).parse_args_and_config(list(argv), return_remaining_strings=True)
    if serve.data_parallel_size != 1:
        raise PreflightError(f"--data_parallel_size {serve.data_parallel_size}: vLLM refuses data parallelism for "
                             "dense models (TRL's vllm-serve help); use --tensor_parallel_size")
    if serve.max_model_len != max_model_len:
        raise PreflightError(f"--max_model_len {serve.max_model_len} differs from the recipe's {max_model_len}")
    given = json.loads(extra[extra.index("--mm-processor-kwargs") + 1]) if "--mm-processor-kwargs" in extra else {}
    if (given.get("min_pixels"), given.get("max_pixels")) != model_args.pixels:
        raise PreflightError(f"the server's --mm-processor-kwargs {given or 'unset'} differ from the recipe's "
                             f"min_pixels/max_pixels {model_args.pixels}")


def dry_run(command: str, argv: Sequence[str], parse: Callable[[Sequence[str]], tuple[Any, ...]]) -> list[str]:
    """``urp-train COMMAND ... --dry-run``: parse the recipe as training would; the plan's lines."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"urp-train {command} --dry-run", add_help=False)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--num-processes", type=int, help="training processes (GPUs) to plan for")
    parser.add_argument("--gpu-memory-gib", type=float, default=80.0, help="memory of one GPU (default 80)")
    parser.add_argument("--accelerate-config", help="the accelerate config the run launches with")
    flags, rest = parser.parse_known_args(list(argv))
    target = Target.from_flags(flags.accelerate_config, flags.num_processes, flags.gpu_memory_gib)
    # Parsed with use_cpu (TrainingArguments refuses bf16 on a machine without a GPU); the plan reads
    # use_cpu from the recipe and the flags instead.
    data_args, args, model_args = parse([*rest, "--use_cpu", "true"])
    recipe = rest[rest.index("--config") + 1] if "--config" in rest else None
    values = (yaml.safe_load(Path(recipe).read_text()) or {}) if recipe else {}
    _, reference, _ = parse(["--config", recipe, "--use_cpu", "true"]) if recipe else (None, args, None)
    on_cpu = bool(values.get("use_cpu", False))
    if "--use_cpu" in rest[:-1]:
        on_cpu = rest[rest.index("--use_cpu") + 1].lower() in ("true", "1", "yes")
    explicit = "generation_batch_size" in values or "--generation_batch_size" in rest
    return plan(command, args, data_args, model_args, reference, target, explicit_generation_batch=explicit,
                on_cpu=on_cpu)
