"""vLLM's CPU build as GRPO's generator: keep its linear weights reloadable.

TRL's colocate mode pushes the policy's weights into vLLM after every optimiser step
(``model.load_weights``), which writes through each parameter's ``weight_loader``. On the CPU
platform vLLM 0.31 repacks every unquantized linear weight after loading
(``UnquantizedLinearMethod.process_weights_after_loading`` → ``dispatch_cpu_unquantized_gemm(layer,
remove_weight=True)``) and replaces ``layer.weight`` by an empty parameter without a loader, so the
first sync fails with ``'Parameter' object has no attribute 'weight_loader'``. On CUDA nothing is
repacked and this module does nothing.

:func:`keep_weights_reloadable` is the one CPU-only switch: it marks each linear layer with vLLM's
own ``_cpu_skip_gemm_dispatch`` flag before that step, so vLLM takes its plain ``F.linear`` path
(used upstream for MLA's ``kv_b_proj``) and keeps the weight in place. Generation is slower than
with the packed oneDNN kernels, and every later sync lands in the weights vLLM computes with.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

logger = logging.getLogger(__name__)

_MARK = "_urp_keeps_cpu_weights"


def keep_weights_reloadable() -> bool:
    """On vLLM's CPU platform, keep linear weights where weight syncs can reach them; True if it applied.

    Idempotent; call it before the engine loads the model, in the process that loads it (TRL's
    colocate mode builds the engine in the trainer's own process).
    """
    from vllm.model_executor.layers.linear import UnquantizedLinearMethod
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return False
    original = UnquantizedLinearMethod.process_weights_after_loading
    if getattr(original, _MARK, False):
        return True

    @functools.wraps(original)
    def process_weights_after_loading(self: Any, layer: Any) -> None:
        layer._cpu_skip_gemm_dispatch = True  # vLLM's own flag: F.linear, weight kept with its loader
        original(self, layer)

    setattr(process_weights_after_loading, _MARK, True)
    UnquantizedLinearMethod.process_weights_after_loading = process_weights_after_loading
    logger.info("vLLM on CPU: linear weights stay unpacked so GRPO can sync the policy into them")
    return True
