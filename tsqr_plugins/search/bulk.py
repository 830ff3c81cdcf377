"""Bulk indexing of a corpus into Elasticsearch or OpenSearch over their shared REST API.

The index is created with the shipped template's settings and mappings (BM25 k1=0.9 b=0.4, the
Lucene-English analyzer, one shard), documents go in ``_bulk`` batches with retries on 429 (whole
request or single items), and the final ``_count`` must equal the number of documents sent.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from .. import engine_configs
from ..errors import InputError, ServerUnavailableError

logger = logging.getLogger(__name__)

ENGINES = ("elasticsearch", "opensearch")
MAX_ATTEMPTS = 6


class BulkIndexer:
    def __init__(self, url: str, auth: tuple[str, str] | None = None, headers: dict[str, str] | None = None,
                 verify: bool = True, timeout: float = 120.0, batch_docs: int = 500, backoff_s: float = 1.0):
        import httpx

        if not url.startswith(("http://", "https://")):
            raise InputError(f"the node's URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, auth=auth, headers=headers, verify=verify, timeout=timeout)
        self.batch_docs = batch_docs
        self.backoff_s = backoff_s

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs):
        """One request to the node; an unreachable node is a ServerUnavailableError naming the URL."""
        import httpx

        try:
            return self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ServerUnavailableError(f"{self.url} is unreachable ({error}): check the URL and that the node runs") from error

    def create_index(self, index: str, field: str = engine_configs.DEFAULT_FIELD, recreate: bool = False) -> None:
        check_index_name(index)
        exists = self.request("HEAD", f"/{index}").status_code == 200
        if exists and not recreate:
            raise InputError(f"index {index!r} exists; pass --recreate to replace it")
        if exists:
            self.request("DELETE", f"/{index}")
        template = engine_configs.index_template(field=field)["template"]
        response = self.request("PUT", f"/{index}", json=template)
        if response.status_code >= 400:
            raise InputError(f"creating {index!r} failed ({response.status_code}): {response.text[:500]}")

    def index(self, index: str, doc_ids: Sequence[str], texts: Sequence[str],
              field: str = engine_configs.DEFAULT_FIELD, progress: bool = True) -> int:
        """Sends every document, checks the count, returns it."""
        from tqdm import tqdm

        check_index_name(index)

        if len(doc_ids) != len(texts):
            raise InputError(f"{len(doc_ids)} document ids but {len(texts)} texts")
        with tqdm(total=len(doc_ids), desc=f"indexing {index}", unit="doc", disable=not progress) as bar:
            for start in range(0, len(doc_ids), self.batch_docs):
                batch = list(zip(doc_ids[start:start + self.batch_docs], texts[start:start + self.batch_docs]))
                self._send(index, batch, field)
                bar.update(len(batch))
        self.request("POST", f"/{index}/_refresh")
        count = self.request("GET", f"/{index}/_count").json().get("count")
        expected = len(set(doc_ids))
        if count != expected:
            raise InputError(f"{index!r} holds {count} documents after indexing {expected}")
        return count

    def _send(self, index: str, batch: list[tuple[str, str]], field: str) -> None:
        pending = batch
        for attempt in range(MAX_ATTEMPTS):
            lines = []
            for doc_id, text in pending:
                lines.append(json.dumps({"index": {"_index": index, "_id": doc_id}}))
                lines.append(json.dumps({"id": doc_id, field: text}, ensure_ascii=False))
            response = self.request("POST", "/_bulk", content=("\n".join(lines) + "\n").encode(),
                                  headers={"Content-Type": "application/x-ndjson"})
            if response.status_code == 429:
                self._wait(attempt, "the whole batch was refused (429)")
                continue
            if response.status_code >= 400:
                raise InputError(f"_bulk failed ({response.status_code}): {response.text[:500]}")
            retry = []
            for (doc_id, text), item in zip(pending, response.json().get("items", [])):
                result = next(iter(item.values()))
                status = result.get("status", 200)
                if status == 429:
                    retry.append((doc_id, text))
                elif status >= 300:
                    raise InputError(f"document {doc_id!r} was refused ({status}): {result.get('error')}")
            if not retry:
                return
            pending = retry
            self._wait(attempt, f"{len(retry)} documents refused with 429")
        raise ServerUnavailableError(f"the cluster kept refusing documents with 429 after {MAX_ATTEMPTS} attempts")

    def _wait(self, attempt: int, why: str) -> None:
        delay = self.backoff_s * 2 ** attempt
        logger.warning("%s; retrying in %.1f s", why, delay)
        time.sleep(delay)


# What Elasticsearch and OpenSearch refuse in an index name (MetadataCreateIndexService
# .validateIndexOrAliasName, both engines): these characters, a leading _ - +, . and .., over 255 bytes.
FORBIDDEN_IN_INDEX_NAMES = set('\\/*?"<>| ,#:')


def check_index_name(name: str) -> str:
    """``name`` when both engines take it as one index's exact name, else an InputError saying why.
    It becomes a URL path segment: a ``#`` or ``?`` there would address another index or add a
    query string (``--recreate`` could have deleted an index the user never named)."""
    bad = sorted(FORBIDDEN_IN_INDEX_NAMES & set(name))
    if bad:
        raise InputError(f"index name {name!r} holds {' '.join(repr(c) for c in bad)}, which Elasticsearch and "
                         "OpenSearch refuse in index names; rename the dataset folder or pass another --index-prefix")
    if not name or name in (".", "..") or name[0] in "_-+" or name != name.lower() or len(name.encode()) > 255:
        raise InputError(f"index name {name!r} is not one Elasticsearch and OpenSearch take (lowercase, not "
                         "starting with _ - +, not . or .., at most 255 bytes)")
    return name


def index_name(prefix: str, task: str) -> str:
    return check_index_name(f"{prefix}-{task}".lower().replace("_", "-"))


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise InputError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    return engine


def basic_auth(user: str | None, password_variable: str) -> tuple[str, str] | None:
    """``(user, password)`` with the password from the environment (never from the command line)."""
    if not user:
        return None
    password = os.environ.get(password_variable)
    if password is None:
        raise InputError(f"--user needs the password in ${password_variable}")
    return user, password


def auth_headers(api_key: str | None) -> dict[str, Any]:
    """Elasticsearch API keys go in ``Authorization: ApiKey``; OpenSearch users pass --user."""
    return {"Authorization": f"ApiKey {api_key}"} if api_key else {}
