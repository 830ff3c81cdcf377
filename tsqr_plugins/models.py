"""Where a model will come from, checked in seconds before a library spends minutes on it.

A local path must exist (transformers otherwise says "Repo id must be in the form..."); a hub id
must be in the local Hugging Face cache or the hub must answer (offline, the libraries retry for a
minute or more and end in a traceback). One error says what was looked for, where, and what to
pass instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError

HUB_PROBE_TIMEOUT_S = 5.0


def looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else with slashes is a folder."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def check_model_source(name: str, what: str = "model", instead: str = "a local model folder") -> None:
    """Return when ``name`` can be loaded from here; raise InputError naming what would work."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{what} {name!r} is a file; pass the model's folder")
        return
    if looks_like_path(name):
        raise InputError(f"no {what} at {path}: the folder does not exist. Pass {instead}")
    if _in_hub_cache(name):
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if offline or not _hub_reachable():
        why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face hub cannot be reached from here"
        raise InputError(f"{what} {name!r} is not in the local Hugging Face cache and {why}. Pass {instead}, "
                         "or download it where the hub is reachable (huggingface-cli download "
                         f"{name}) and copy the cache here")


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    for filename in ("config.json", "modules.json", "tokenizer_config.json"):
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str):
            return True
    return False


def _hub_reachable() -> bool:
    import httpx

    try:
        from huggingface_hub.constants import ENDPOINT
    except ImportError:
        return False
    try:
        httpx.head(ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S)
        return True
    except httpx.HTTPError:
        return False
