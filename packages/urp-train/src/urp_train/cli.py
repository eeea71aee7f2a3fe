"""``urp-train``: GRPO, the SFT baseline and the tiny offline model, from YAML recipes.

``urp-train grpo --config configs/train/demo.yaml [--flag value ...]``: TRL's parser reads
the recipe into the dataclasses (data, training, model), explicit flags win, unknown keys
are errors; every flag takes ``--a_b`` and ``--a-b`` and ``--help`` shows the defaults.
The commands have the shared shape of :mod:`urp_data.util.clikit` (``make_parser`` and
``main(cfg)``, as TRL's scripts): ``grpo`` and ``sft`` parse with ``TrlParser`` when they run,
so ``urp-train --help`` imports no torch (a command's own ``--help`` imports TRL's configs to
list every field). Before TRL is imported, the recipe's base model is looked up
(:func:`check_base_model`): a missing one names itself in a second, not after the imports and
minutes of hub retries. Errors and exit codes follow the shared contract (0 ok, 1 an error,
2 a usage error; one line on stderr, ``URP_DEBUG=1`` adds the traceback).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from urp_data.util.clikit import Command, UsageError, dispatch, flag_names, load_config_file
from urp_data.util.fs import one_line
from urp_data.util.hub import check_model

if TYPE_CHECKING:
    from trl import SFTConfig

    from urp_train.dataset import URPDataArguments
    from urp_train.models import URPModelConfig
    from urp_train.trainer import URPGRPOConfig

logger = logging.getLogger("urp_train")


@dataclass(frozen=True)
class Recipe:
    """What ``grpo`` and ``sft`` train with: TRL's three configs, in the order of its scripts."""

    data: URPDataArguments
    training: URPGRPOConfig | SFTConfig
    model: URPModelConfig


@dataclass(frozen=True)
class DryRun:
    """``--dry-run``: the plan for the target machine (:mod:`urp_train.preflight`), nothing trained."""

    lines: list[str]


@dataclass
class TinyModelConfig:
    """``urp-train tiny-model``: the tiny offline Qwen2.5-VL (random weights, real Qwen2.5 tokenizer)."""

    out: str = field(metadata={"help": "folder to save the model and processor in"})
    seed: int = field(default=0, metadata={"help": "seed of the random weights"})


def _flag_value(argv: Sequence[str], name: str) -> str | None:
    """The value of flag ``name`` in ``argv`` as argparse reads it: either spelling, ``--f V`` or ``--f=V``,
    the last one given wins."""
    names, value = set(flag_names(name)), None
    for i, arg in enumerate(argv):
        key, sep, inline = arg.partition("=")
        if key in names:
            value = inline if sep else (argv[i + 1] if i + 1 < len(argv) else None)
    return value


def check_base_model(argv: Sequence[str]) -> None:
    """Look the base model up (:func:`~urp_data.util.hub.check_model`) from the flags and the ``--config``
    recipe, read with yaml alone: this runs before TRL, transformers and torch are imported."""
    if "-h" in argv or "--help" in argv:
        return
    recipe = load_config_file(_flag_value(argv, "config"))
    name = _flag_value(argv, "model_name_or_path") or recipe.get("model_name_or_path")
    if name:
        revision = _flag_value(argv, "model_revision") or recipe.get("model_revision")
        check_model(str(name), None if revision is None else str(revision))


def _trl_parse(dataclass_types: tuple[type, ...], argv: Sequence[str], prog: str) -> tuple[Any, ...]:
    from trl import TrlParser

    parser = TrlParser(dataclass_types, prog=prog, description=HELP[prog.split()[-1]],
                       epilog="--config FILE.yaml reads a recipe (see configs/train/); flags given "
                              "after it override its values, unknown keys are errors.")
    try:
        return parser.parse_args_and_config(list(argv))
    except ValueError as exc:  # unknown recipe keys, __post_init__ checks
        raise UsageError(one_line(exc)) from exc


def _parse_recipe(command: str, config_type: Callable[[], type], argv: list[str]) -> Recipe | DryRun:
    """``grpo``'s and ``sft``'s arguments: under DeepSpeed the ZeRO-3 dtype check (before ``TrainingArguments``,
    which sets DeepSpeed up), then the base model, then TRL's parser; or the ``--dry-run`` plan."""
    from urp_train.preflight import dry_run, zero3_dtype_error, zero_stage_from_env

    if "--dry-run" not in argv and (stage := zero_stage_from_env()):  # under `accelerate launch` with ZeRO
        from trl import TrlParser

        from urp_train.models import URPModelConfig

        dtype = TrlParser((URPModelConfig,)).parse_args_and_config(argv, return_remaining_strings=True)[0].dtype
        if (error := zero3_dtype_error(dtype, stage)) is not None:
            raise ValueError(error)
    check_base_model(argv)
    from urp_train.dataset import URPDataArguments
    from urp_train.models import URPModelConfig

    types = (URPDataArguments, config_type(), URPModelConfig)
    prog = f"urp-train {command}"
    if "--dry-run" in argv:
        return DryRun(dry_run(command, argv, lambda a: _trl_parse(types, a, prog)))
    return Recipe(*_trl_parse(types, argv, prog))


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


def _train(cfg: Recipe | DryRun, make_trainer: Callable[..., Any]) -> int:
    """TRL's script order: seed, logging, resume; data; model; trainer; train; save metrics and model.

    ``make_trainer(args, train, evaluation, model=, processing_class=, peft_config=)`` builds the trainer.
    """
    if isinstance(cfg, DryRun):
        print("\n".join(cfg.lines))
        return 0
    from trl import get_peft_config

    from urp_train.dataset import check_image_tokens, load_data
    from urp_train.models import master_weight_warning
    from urp_train.preflight import zero_stage_from_env

    data_args, training_args, model_args = cfg.data, cfg.training, cfg.model
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


def _grpo_config() -> type:
    from urp_train.trainer import URPGRPOConfig

    return URPGRPOConfig


def grpo(cfg: Recipe | DryRun) -> int:
    from urp_train.rewards import reward_funcs
    from urp_train.trainer import URPGRPOTrainer

    def make(args: Any, train: Any, evaluation: Any, **common: Any) -> Any:
        rewards = reward_funcs(args.reward_funcs, scale=args.accuracy_scale, scales=args.accuracy_scales)
        return URPGRPOTrainer(args=args, train_dataset=train, eval_dataset=evaluation, reward_funcs=rewards, **common)

    return _train(cfg, make)


def _sft_config() -> type:
    from trl import SFTConfig

    return SFTConfig


def sft(cfg: Recipe | DryRun) -> int:
    from trl import SFTTrainer

    from urp_train.dataset import with_completions

    def make(args: Any, train: Any, evaluation: Any, **common: Any) -> Any:
        return SFTTrainer(args=args, train_dataset=with_completions(train),
                          eval_dataset=with_completions(evaluation) if evaluation is not None else None, **common)

    return _train(cfg, make)


def tiny_model(cfg: TinyModelConfig) -> int:
    from urp_train.models import build_tiny_model

    print(build_tiny_model(Path(cfg.out), seed=cfg.seed))
    return 0


HELP: dict[str, str] = {
    "grpo": "GRPO on a URP build (URPGRPOTrainer; group-wise advantages with --advantage_grouping group)",
    "sft": "the supervised baseline on the same examples (TRL SFTTrainer; the target as the answer)",
    "tiny-model": "build the tiny offline Qwen2.5-VL (random weights, real Qwen2.5 tokenizer) for tests and the demo",
}

COMMANDS: list[Command] = [
    Command("grpo", HELP["grpo"], grpo, parse=lambda argv: _parse_recipe("grpo", _grpo_config, argv)),
    Command("sft", HELP["sft"], sft, parse=lambda argv: _parse_recipe("sft", _sft_config, argv)),
    Command("tiny-model", HELP["tiny-model"], tiny_model, TinyModelConfig),
]
"""``grpo`` and ``sft`` read their recipes with TRL's parser (``urp-train grpo --help`` lists every field);
``tiny-model``'s flags come from :class:`TinyModelConfig`."""


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("urp-train", "Train vision-language models on URP builds (GRPO, SFT baseline); "
                    "recipes live in configs/train/.", COMMANDS, argv, log_level="INFO",
                    log_format="%(asctime)s %(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    raise SystemExit(main())
