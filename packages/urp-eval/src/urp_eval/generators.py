"""Model backends of ``urp-eval predict``: K completions per prompt from transformers or vLLM.

Heavy imports (torch, transformers, vllm) happen inside the backend that needs them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Protocol

from urp_eval.config import PredictConfig


class Generator(Protocol):
    """A model backend: K completions for each prompt; ``images`` is empty when images are dropped."""

    def generate(self, messages: Sequence[list[dict[str, Any]]], images: Sequence[Any]) -> list[list[str]]: ...


class TransformersGenerator:
    """Batched ``model.generate`` with left padding, on CUDA when available."""

    def __init__(self, cfg: PredictConfig) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.torch = torch
        self.cfg = cfg
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.processor = AutoProcessor.from_pretrained(cfg.model, padding_side="left")
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model = AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=dtype).to(self.device).eval()
        torch.manual_seed(cfg.seed)

    def generate(self, messages: Sequence[list[dict[str, Any]]], images: Sequence[Any]) -> list[list[str]]:
        texts = [self.processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
                 for m in messages]
        inputs = self.processor(text=texts, images=list(images) or None, padding=True,
                                return_tensors="pt").to(self.device)
        k = self.cfg.samples_per_prompt
        sampling = {"do_sample": True, "temperature": self.cfg.temperature} if self.cfg.temperature > 0 \
            else {"do_sample": False}
        with self.torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.cfg.max_new_tokens, num_return_sequences=k,
                                      **sampling)
        decoded = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return [decoded[i * k:(i + 1) * k] for i in range(len(texts))]


class VLLMGenerator:
    """vLLM offline inference; vLLM batches internally, ``batch_size`` only sets the checkpoint grain.

    The engine is sized by ``max_model_len`` and ``vllm_kv_cache_gib`` (see :class:`PredictConfig`)
    and computes in bfloat16 on a GPU and float32 on vLLM's CPU build, as the transformers backend
    does. Engines are cached per process by their settings (:func:`_engine`), so repeated
    :func:`urp_eval.predict.predict` calls in one process (ablations, notebooks, tests) load the
    model once.
    """

    def __init__(self, cfg: PredictConfig) -> None:
        from transformers import AutoProcessor
        from vllm import SamplingParams
        from vllm.platforms import current_platform

        # vLLM 0.31's CPU build fails on a seeded request whose prefill is split across steps
        # ("CPU Generator does not use offset": it rewinds a per-request generator that the CPU does
        # not offset), which any batch longer than one step's token budget has; on the CPU the seed
        # seeds the engine instead, per request on a GPU.
        cpu = current_platform.is_cpu()
        self.processor = AutoProcessor.from_pretrained(cfg.model)
        self.llm = _engine(str(cfg.model), cfg.max_model_len, cfg.vllm_kv_cache_gib, cfg.seed if cpu else 0,
                           cfg.vllm_enforce_eager)
        self.params = SamplingParams(n=cfg.samples_per_prompt, temperature=cfg.temperature,
                                     max_tokens=cfg.max_new_tokens, seed=None if cpu else cfg.seed)

    def requests(self, messages: Sequence[list[dict[str, Any]]], images: Sequence[Any]) -> list[dict[str, Any]]:
        """vLLM prompts: the chat template's text, with the chip as multi-modal data (none with --drop image)."""
        prompts: list[dict[str, Any]] = [
            {"prompt": self.processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True)}
            for m in messages]
        for p, im in zip(prompts, images):
            p["multi_modal_data"] = {"image": im}
        return prompts

    def complete(self, messages: Sequence[list[dict[str, Any]]], images: Sequence[Any], params: Any = None) -> list[Any]:
        """vLLM's ``RequestOutput`` per prompt (prompt token ids, completions, log-probabilities if asked)."""
        return self.llm.generate(self.requests(messages, images), params or self.params, use_tqdm=False)

    def generate(self, messages: Sequence[list[dict[str, Any]]], images: Sequence[Any]) -> list[list[str]]:
        return [[c.text for c in o.outputs] for o in self.complete(messages, images)]


@functools.cache
def _engine(model: str, max_model_len: int, kv_cache_gib: float | None, seed: int, enforce_eager: bool) -> Any:
    """One ``vllm.LLM`` per (model, context length, KV cache size, engine seed, eager or not) in this process.

    On vLLM's CPU build, ``gpu_memory_utilization`` would reserve that share of all RAM for this
    process, which fails as soon as anything else holds memory; an explicit KV cache (default
    1 GiB) does not. On a GPU the seed is per request (``SamplingParams.seed``) and ``seed`` is 0, so
    one engine serves any.
    """
    from vllm import LLM
    from vllm.platforms import current_platform

    cpu = current_platform.is_cpu()
    gib = kv_cache_gib if kv_cache_gib is not None else (1.0 if cpu else None)
    kv = {} if gib is None else {"kv_cache_memory_bytes": int(gib * 2**30)}
    return LLM(model=model, dtype="float32" if cpu else "bfloat16", max_model_len=max_model_len,
               limit_mm_per_prompt={"image": 1}, seed=seed, enforce_eager=enforce_eager, **kv)


def make_generator(cfg: PredictConfig) -> Generator:
    """The backend ``cfg.backend`` names (``transformers`` or ``vllm``)."""
    return TransformersGenerator(cfg) if cfg.backend == "transformers" else VLLMGenerator(cfg)
