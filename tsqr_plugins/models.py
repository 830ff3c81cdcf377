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
                         "or download it where the hub is reachable (hf download "
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


# The files whose change means new weights (the tokenizer and chat template change the prompt too).
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.gguf", "*.json", "*.model", "*.txt", "*.jinja")


def weights_fingerprint(name: str) -> str:
    """What identifies these weights in the rewrite cache, beyond the model's name: new weights saved
    at the same path must not be answered from the old ones' cache. A local folder: a digest of
    its weight, config and tokenizer files' names, sizes and modification times (no reading of
    gigabytes); a hub id: the revision in the local Hugging Face cache, when there is one."""
    import hashlib

    path = Path(name).expanduser()
    if path.is_dir():
        digest = hashlib.sha256()
        for pattern in WEIGHT_FILES:
            for file in sorted(path.glob(pattern)):
                stat = file.stat()
                digest.update(f"{file.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return "files:" + digest.hexdigest()[:16]
    revision = _hub_revision(name)
    return f"revision:{revision}" if revision else ""


def _hub_revision(repo_id: str) -> str | None:
    """The commit of ``repo_id``'s config in the local Hugging Face cache (snapshots/<commit>/)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent.name if isinstance(found, str) else None


def model_identity(model: str) -> str:
    """A local path resolved to an absolute one (stable cache keys); hub ids unchanged."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model
