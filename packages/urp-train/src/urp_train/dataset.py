"""URP build folders as TRL conversational vision-language datasets.

One example per (sample, indicator) with a non-null raw value: the chat messages rendered by
``urp_data.contract.render_messages``, the sample's image chip, and the columns rewards and
advantage grouping read (``target``, ``indicator``, ``group``, ...). The target is the score
(0.0–9.9, the manifest's train-fitted scale, one decimal) the model is asked to answer; the
raw value is kept as ``target_value``.
"""

from __future__ import annotations

import io
import logging
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from urp_data.contract import (
    SchemaError,
    indicator_columns,
    load_manifest,
    render_answer,
    render_messages,
    resolve_splits,
    split_path,
)

logger = logging.getLogger(__name__)

DROPS = ("image", "text")


@dataclass
class URPDataArguments:
    """Which URP examples to train on (shared by ``urp-train grpo`` and ``urp-train sft``)."""

    build_dir: str = field(
        default="build/demo",
        metadata={"help": "Build folder <out>/<region> written by `urp-data build` (holds manifest.json)."},
    )
    split: str = field(default="train", metadata={"help": "Split (or alias such as 'test') to train on."})
    eval_split: str | None = field(
        default=None, metadata={"help": "Split to evaluate on during training (e.g. 'val'); none by default."}
    )
    train_indicators: list[str] | None = field(
        default=None, metadata={"help": "Indicators to train on; all indicators of the build by default. Leave "
                                "some out to measure zero-shot transfer to them (scripts/paper.sh, PAPER_HELD_OUT)."}
    )
    eval_indicators: list[str] | None = field(
        default=None, metadata={"help": "Indicators of eval_split during training; train_indicators by default. "
                                "Held-out indicators here show transfer while training."}
    )
    drop: str | None = field(
        default=None,
        metadata={"help": "Modality ablation: 'image' (text only) or 'text' (image and coordinates only).",
                  "choices": [None, *DROPS]},
    )
    max_examples: int | None = field(
        default=None, metadata={"help": "Keep only the first N examples (after a seeded shuffle); for smoke runs."}
    )

    def __post_init__(self) -> None:
        if self.drop is not None and self.drop not in DROPS:
            raise ValueError(f"drop={self.drop!r} is not an ablation; use 'image', 'text' or leave it unset")


def chip_size(image: dict[str, Any] | None) -> tuple[int, int]:
    """(width, height) in pixels of an encoded chip, from its header only."""
    from PIL import Image

    if image is None or image.get("bytes") is None:
        raise SchemaError("a sample has no image bytes; rebuild the region or train with --drop image")
    with Image.open(io.BytesIO(image["bytes"])) as im:
        return im.size


def iter_examples(build_dir: str | Path, split: str = "train", indicators: list[str] | None = None, *,
                  with_images: bool = True) -> Iterator[tuple[dict[str, Any], str]]:
    """(split-file row, indicator) of every example of a split (or alias), in ``load_examples``' order.

    An example is a sample with a finite value of the indicator. Without ``with_images`` the rows
    leave the image column unread (the preflight counts pools and prompt lengths this way).
    """
    for name in resolve_splits(split):
        path = split_path(build_dir, name)
        if not path.is_file():
            raise SchemaError(f"{path} not found; build the region with `urp-data build`")
        schema = pq.read_schema(path)
        available = indicator_columns(schema)
        chosen = indicators or available
        missing = [i for i in chosen if i not in available]
        if missing:
            raise SchemaError(f"{path} has no indicator {', '.join(missing)}; available: {', '.join(available)}")
        columns = None if with_images else [c for c in schema.names if c != "image"]
        for row in pq.read_table(path, columns=columns).to_pylist():
            for ind in chosen:
                value = row[ind]
                if value is not None and math.isfinite(value):
                    yield row, ind


def load_examples(build_dir: str | Path, split: str = "train", *, indicators: list[str] | None = None,
                  drop: str | None = None) -> Any:
    """A ``datasets.Dataset`` of URP examples from one split (or alias) of a build folder.

    Columns: ``prompt`` (system + user messages; the user turn holds an image slot unless
    ``drop="image"``), ``image`` (PIL RGB chip; absent when the image is dropped), ``target``
    (score 0.0–9.9), ``target_value`` (raw value, the indicator's unit), ``indicator``,
    ``group``, ``h3_cell``, ``sample_id``. Chips stay JPEG-encoded until read. Every chip of a build has the same pixel size, so
    every prompt carries the same number of image tokens; a mixed build is rejected.
    """
    import datasets

    if drop is not None and drop not in DROPS:
        raise ValueError(f"drop={drop!r} is not an ablation; use 'image' or 'text'")
    manifest = load_manifest(build_dir)
    rows: dict[str, list[Any]] = {k: [] for k in ("prompt", "image", "target", "target_value", "indicator",
                                                   "group", "h3_cell", "sample_id")}
    sizes: set[tuple[int, int]] = set()
    for row, ind in iter_examples(build_dir, split, indicators, with_images=drop != "image"):
        image = None if drop == "image" else {"bytes": row["image"]["bytes"], "path": None}
        if image is not None:
            sizes.add(chip_size(image))
        value = row[ind]
        info = manifest.indicators.get(ind)
        scale = info.score_scale() if info else None
        if info is None or scale is None:
            raise SchemaError(f"manifest of {build_dir} has no score scale for {ind!r}; rebuild the region")
        spec = info.spec()  # the same prompt spec evaluation renders with
        rows["prompt"].append(render_messages(row, ind, spec=spec, drop=drop))  # type: ignore[arg-type]
        rows["image"].append(image)
        rows["target"].append(round(float(scale.to_score(value)), 1))
        rows["target_value"].append(float(value))
        rows["indicator"].append(ind)
        for key in ("group", "h3_cell", "sample_id"):
            rows[key].append(row[key])
    if len(sizes) > 1:
        raise SchemaError(f"chips of {build_dir} have several sizes {sorted(sizes)}: the number of image tokens "
                          "would vary between prompts; rebuild with one chip size")
    if not rows["target"]:
        raise SchemaError(f"no example with a non-null target in split {split!r} of {build_dir}")
    features = None
    if drop == "image":
        del rows["image"]
    else:
        features = datasets.Features({
            "prompt": datasets.List({"role": datasets.Value("string"),
                                     "content": datasets.List({"type": datasets.Value("string"),
                                                               "text": datasets.Value("string")})}),
            "image": datasets.Image(),
            "target": datasets.Value("float64"),
            "target_value": datasets.Value("float64"),
            **{k: datasets.Value("string") for k in ("indicator", "group", "h3_cell", "sample_id")},
        })
    ds = datasets.Dataset.from_dict(rows, features=features)
    logger.info("%d examples from split %s of %s (%s)", len(ds), split, build_dir,
                ", ".join(f"{i}: {n}" for i, n in sorted(Counter(rows["indicator"]).items())))
    return ds


def load_data(args: URPDataArguments, seed: int) -> tuple[Any, Any]:
    """(train, eval or None) datasets for ``args``; ``max_examples`` keeps a seeded random subset."""
    train = load_examples(args.build_dir, args.split, indicators=args.train_indicators, drop=args.drop)
    if args.max_examples is not None and args.max_examples < len(train):
        train = train.shuffle(seed=seed).select(range(args.max_examples))
    evaluation = None
    if args.eval_split is not None:
        evaluation = load_examples(args.build_dir, args.eval_split, indicators=args.eval_indicators
                                   or args.train_indicators, drop=args.drop)
    return train, evaluation


def with_completions(dataset: Any) -> Any:
    """Add the SFT ``completion``: the target score in the answer format, as an assistant message."""
    def add(target: float) -> dict[str, Any]:
        text = render_answer(target)
        return {"completion": [{"role": "assistant", "content": [{"type": "text", "text": text}]}]}

    return dataset.map(add, input_columns="target")  # images pass through without being decoded


def image_token_counts(dataset: Any, processor: Any, pixels: tuple[int, int] | None = None,
                       limit: int | None = None) -> list[tuple[int, int]]:
    """(image tokens in the tokenized prompt, tokens the image should become) per example.

    The second number is computed independently of the processor (``urp_train.models.image_tokens``,
    Qwen2-VL's resize rule) from the chip's pixel size and ``pixels`` = (min_pixels, max_pixels), the
    bounds the recipe asked for (the processor's own when None). The two disagree when the processor
    does not apply the recipe's bounds (e.g. a checkpoint's stored bounds won) or the chat template
    drops image slots; a VLM's forward pass then fails or feeds image features to the wrong positions.
    """
    from urp_train.models import image_tokens

    n = len(dataset) if limit is None else min(limit, len(dataset))
    image_token_id = processor.image_token_id
    ip = processor.image_processor
    low, high = pixels if pixels is not None else (ip.size["shortest_edge"], ip.size["longest_edge"])
    out = []
    for i in range(n):
        ex = dataset[i]
        images = [ex["image"]] if ex.get("image") is not None else None
        slots = sum(part["type"] == "image" for m in ex["prompt"] for part in m["content"])
        if slots != len(images or ()):
            raise SchemaError(f"example {i} has {slots} image slots for {len(images or ())} images; "
                              "render prompts with urp_data.contract.render_messages")
        text = processor.apply_chat_template(ex["prompt"], add_generation_prompt=True, tokenize=False)
        enc = processor(text=[text], images=images, return_tensors="pt")
        expected = sum(image_tokens(im.height, im.width, low, high, patch=ip.patch_size, merge=ip.merge_size)
                       for im in images or ())
        out.append((int((enc["input_ids"] == image_token_id).sum()), expected))
    return out


def check_image_tokens(dataset: Any, processor: Any, pixels: tuple[int, int] | None = None, limit: int = 32) -> None:
    """Raise if a prompt's image tokens disagree with its image under ``pixels``, or vary between prompts."""
    counts = image_token_counts(dataset, processor, pixels, limit)
    bad = [(i, c) for i, c in enumerate(counts) if c[0] != c[1]]
    if bad:
        i, (got, want) = bad[0]
        raise SchemaError(f"example {i} has {got} image tokens but its image needs {want} under min/max pixels "
                          f"{pixels or 'of the processor'}; check that the processor applies min_pixels/max_pixels, "
                          "the chat template, and that every prompt has one image slot")
    if len({c[0] for c in counts}) > 1:
        raise SchemaError(f"prompts carry different numbers of image tokens {sorted({c[0] for c in counts})}; "
                          "set equal min_pixels and max_pixels or rebuild with one chip size")
