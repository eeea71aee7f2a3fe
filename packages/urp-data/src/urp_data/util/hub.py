"""Is a model there? One quick look before a run loads it, so a missing model names itself.

``transformers`` takes any name that is not a folder for a Hugging Face Hub id and asks the hub,
five times per file with back-off, before it reports a connection failure; a local folder that
does not exist yet (``runs/demo-warmstart`` is a valid ``org/name``) then fails minutes later
without its name or the command that makes it. :func:`check_model` asks once, without retries,
and raises :class:`~urp_data.errors.InputError` with one line saying what was looked for, whether
it looks like a local path, and what makes it. ``huggingface_hub`` is imported only here, when a
model backend runs (the ``hub`` extra), so the data contract needs neither it nor torch.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from urp_data.errors import InputError
from urp_data.util.fs import one_line

MADE_BY: dict[str, str] = {
    "models/tiny-qwen2.5-vl": "urp-train tiny-model --out models/tiny-qwen2.5-vl",
    "runs/demo-warmstart": "urp-train sft --config configs/train/warmstart_demo.yaml",
    "runs/demo-grpo": "urp-train grpo --config configs/train/demo.yaml",
    "runs/demo-sft": "urp-train sft --config configs/train/sft_demo.yaml",
}
"""The local models the shipped recipes start from or write, and the command that makes each
(run from the repository root; ``scripts/demo.sh`` runs them in order)."""

LOOKUP_TIMEOUT_S = 10.0
"""One request to the hub's model API; a refused or unresolvable host fails at once."""


def _made_by(name: str) -> str | None:
    """The command that makes ``name``, matched on its trailing path parts (``./runs/x``, ``/repo/runs/x``)."""
    parts = PurePosixPath(Path(name).expanduser().as_posix()).parts
    for known, command in MADE_BY.items():
        tail = PurePosixPath(known).parts
        if parts[-len(tail):] == tail:
            return command
    return None


def _is_repo_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def check_model(name: str, revision: str | None = None) -> None:
    """Return if ``name`` is a folder, a cached hub model or a model the hub knows; else raise one line.

    ``name`` looks like a local path when it is not a valid hub id (absolute, ``./``, ``~``, more
    than one ``/``), when its first part is a folder here (``runs/`` after a first run) or when a
    shipped recipe makes it (:data:`MADE_BY`); such a name is not asked of the hub. Otherwise the
    hub's model API is asked once (``HF_ENDPOINT``, no retries); with ``HF_HUB_OFFLINE`` set only the
    local hub cache counts. A gated or private model that the hub reports as existing passes:
    loading it then says what access it needs.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise InputError(f"model {name!r} is a file; give the folder that holds config.json, or a hub id")
    if not _is_repo_id(name) or Path(path.parts[0]).is_dir() or _made_by(name):
        made = _made_by(name)
        raise InputError(f"model {name!r} not found: it looks like a local path and there is no such folder; "
                         + (f"make it with `{made}`" if made else "check the path, or give a hub id (org/name)"))

    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
        return
    lead = f"model {name!r} not found: not a folder here"
    if constants.HF_HUB_OFFLINE:
        raise InputError(f"{lead}, and HF_HUB_OFFLINE is set but the hub cache ({constants.HF_HUB_CACHE}) "
                         "does not hold it; unset HF_HUB_OFFLINE to download it")
    import httpx

    try:
        HfApi().model_info(name, revision=revision, timeout=LOOKUP_TIMEOUT_S)
    except GatedRepoError:
        return
    except RepositoryNotFoundError:
        raise InputError(f"{lead}, and {constants.ENDPOINT} has no model of that name (a private one needs "
                         "`hf auth login`); check the name, or give a model folder") from None
    except RevisionNotFoundError:
        raise InputError(f"{lead}, and {constants.ENDPOINT} has no revision {revision!r} of it") from None
    except (HfHubHTTPError, httpx.TransportError) as exc:
        raise InputError(f"{lead}, and the hub could not be asked ({constants.ENDPOINT}: {one_line(exc)}); check "
                         "the network or HF_ENDPOINT, or download the model where the hub is reachable and run "
                         "with HF_HUB_OFFLINE=1") from None
