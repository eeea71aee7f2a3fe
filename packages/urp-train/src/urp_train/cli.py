"""``urp-train``: GRPO, the SFT baseline and the tiny offline model, from YAML recipes.

``urp-train grpo --config configs/train/demo.yaml [--flag value ...]``: TRL's parser reads
the recipe into the dataclasses (data, training, model), explicit flags win, unknown keys
are errors. Heavy libraries are imported inside the commands, so ``urp-train --help`` is
instant (a command's own ``--help`` imports TRL's configs to list every field).
Errors and exit codes follow the shared contract in :mod:`urp_data.util.clikit` (0 ok, 1 an
error, 2 a usage error; one line on stderr, ``URP_DEBUG=1`` adds the traceback).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from urp_data.util.clikit import EXIT_USAGE, UsageError, run, setup_logging
from urp_data.util.fs import one_line
from urp_data.util.hub import check_model

logger = logging.getLogger("urp_train")

COMMANDS: dict[str, str] = {
    "grpo": "GRPO on a URP build (URPGRPOTrainer; group-wise advantages with --advantage_grouping group)",
    "sft": "the supervised baseline on the same examples (TRL SFTTrainer; the target as the answer)",
    "tiny-model": "build the tiny offline Qwen2.5-VL (random weights, real Qwen2.5 tokenizer) for tests and the demo",
}


def _parse(dataclass_types: tuple[type, ...], argv: Sequence[str], prog: str) -> tuple[Any, ...]:
    from trl import TrlParser

    parser = TrlParser(dataclass_types, prog=prog, description=COMMANDS[prog.split()[-1]],
                       epilog="--config FILE.yaml reads a recipe (see configs/train/); flags given "
                              "after it override its values, unknown keys are errors.")
    try:
        return parser.parse_args_and_config(list(argv))
    except ValueError as exc:  # unknown recipe keys, __post_init__ checks
        raise UsageError(one_line(exc)) from exc


def _setup(training_args: Any) -> str | None:
    """Seed, logging levels and the checkpoint to resume from (an explicit path, else the last one)."""
    import datasets
    import transformers
    from transformers.trainer_utils import get_last_checkpoint

    transformers.set_seed(training_args.seed)
    level = training_args.get_process_log_level()
    logging.getLogger("urp_train").setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    if training_args.resume_from_checkpoint:
        return training_args.resume_from_checkpoint
    last = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
    if last is not None:
        logger.info("resuming from %s (use another output_dir to start afresh)", last)
    return last


def _run(command: str, config_type: type, argv: Sequence[str], make_trainer: Callable[..., Any]) -> int:
    """TRL's script order: parse; seed, logging, resume; data; model; trainer; train; save metrics and model.

    ``make_trainer(args, train, evaluation, model=, processing_class=, peft_config=)`` builds the trainer.
    """
    from trl import get_peft_config

    from urp_train.dataset import URPDataArguments, check_image_tokens, load_data
    from urp_train.models import URPModelConfig, master_weight_warning, zero_stage_from_env
    from urp_train.preflight import dry_run, zero3_dtype_error

    types = (URPDataArguments, config_type, URPModelConfig)
    if "--dry-run" in argv:
        return dry_run(command, argv, lambda a: _parse(types, a, f"urp-train {command}"))
    if stage := zero_stage_from_env():  # before TrainingArguments, which sets DeepSpeed up
        from trl import TrlParser

        dtype = TrlParser((URPModelConfig,)).parse_args_and_config(list(argv), return_remaining_strings=True)[0].dtype
        if (error := zero3_dtype_error(dtype, stage)) is not None:
            raise ValueError(error)
    data_args, training_args, model_args = _parse(types, argv, f"urp-train {command}")
    if model_args.model_name_or_path:  # a missing model names itself now, not after minutes of hub retries
        check_model(model_args.model_name_or_path, model_args.model_revision)
    checkpoint = _setup(training_args)
    train, evaluation = load_data(data_args, training_args.seed)
    model, processor = model_args.load(training_args.trust_remote_code)
    if not zero_stage_from_env() and (warning := master_weight_warning(model, model_args.use_peft)) is not None:
        logger.warning(warning)
    if "image" in train.column_names:
        check_image_tokens(train, processor, model_args.pixels)
    trainer = make_trainer(training_args, train, evaluation, model=model, processing_class=processor,
                           peft_config=get_peft_config(model_args))
    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    trainer.save_model(training_args.output_dir)  # with the processor: loadable with from_pretrained
    logger.info("model saved to %s", training_args.output_dir)
    return 0


def grpo(argv: Sequence[str]) -> int:
    from urp_train.rewards import reward_funcs
    from urp_train.trainer import URPGRPOConfig, URPGRPOTrainer

    def make(args: Any, train: Any, evaluation: Any, **common: Any) -> Any:
        rewards = reward_funcs(args.reward_funcs, scale=args.accuracy_scale, scales=args.accuracy_scales)
        return URPGRPOTrainer(args=args, train_dataset=train, eval_dataset=evaluation, reward_funcs=rewards, **common)

    return _run("grpo", URPGRPOConfig, argv, make)


def sft(argv: Sequence[str]) -> int:
    from trl import SFTConfig, SFTTrainer

    from urp_train.dataset import with_completions

    def make(args: Any, train: Any, evaluation: Any, **common: Any) -> Any:
        return SFTTrainer(args=args, train_dataset=with_completions(train),
                          eval_dataset=with_completions(evaluation) if evaluation is not None else None, **common)

    return _run("sft", SFTConfig, argv, make)


def tiny_model(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="urp-train tiny-model", description=COMMANDS["tiny-model"])
    parser.add_argument("--out", required=True, type=Path, help="folder to save the model and processor in")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    from urp_train.models import build_tiny_model

    print(build_tiny_model(args.out, seed=args.seed))
    return 0


RUNNERS: dict[str, Callable[[Sequence[str]], int]] = {"grpo": grpo, "sft": sft, "tiny-model": tiny_model}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="urp-train", description="Train vision-language models on URP builds (GRPO, SFT baseline).",
        epilog="Run `urp-train COMMAND --help` for a command's options; recipes live in configs/train/.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    setup_logging("INFO", "%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = _top_parser()
    if not argv or argv[0] not in RUNNERS:
        if argv and argv[0] in ("-h", "--help"):
            parser.print_help()
            return 0
        parser.print_usage(sys.stderr)
        print(f"urp-train: error: choose a command: {', '.join(RUNNERS)}", file=sys.stderr)
        return EXIT_USAGE
    return run(f"urp-train {argv[0]}", lambda: RUNNERS[argv[0]](argv[1:]))


if __name__ == "__main__":
    raise SystemExit(main())
