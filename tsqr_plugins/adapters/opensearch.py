"""OpenSearch: the TongSearch-QR query-transform stage around ``opensearch-py``.

    from opensearchpy import OpenSearch
    from tsqr_plugins import Rewriter, load_backend
    from tsqr_plugins.adapters.opensearch import RewritingOpenSearch

    client = RewritingOpenSearch(OpenSearch("http://127.0.0.1:9200"), Rewriter(load_backend("openai")))
    client.search(index="docs", body={"query": {"match": {"text": "why do moths circle lamps?"}}})

For no Python in the search path, ``tsqr opensearch install`` sets up a native search pipeline
instead. See ``searchclient.py`` for the behaviour.
"""

from __future__ import annotations

from typing import Any

from ..core import Rewriter
from ..errors import InputError
from ..lazy import require
from .searchclient import AsyncRewritingSearchClient, RewritingSearchClient


class RewritingOpenSearch(RewritingSearchClient):
    """An ``opensearchpy.OpenSearch`` client whose ``search()`` and ``msearch()`` rewrite text queries first.

    Args:
        client: The ``opensearchpy.OpenSearch`` to wrap.
        rewriter: Makes the rewrites; None sends every search as written.
        **options: The stage's options, :class:`~tsqr_plugins.adapters.stage.StageSettings`'s fields
            (see :class:`RewritingSearchClient`).

    Raises:
        MissingDependencyError: The ``opensearch`` extra is not installed.
        InputError: ``client`` is not an ``opensearchpy.OpenSearch``, or an option is invalid.
    """

    def __init__(self, client: Any, rewriter: Rewriter | None, **options: Any):
        opensearchpy = require("opensearchpy", "opensearch", "the OpenSearch stage")
        if not isinstance(client, opensearchpy.OpenSearch):
            raise InputError(f"client must be an opensearchpy.OpenSearch, got {type(client).__name__}")
        super().__init__(client, rewriter, **options)


class AsyncRewritingOpenSearch(AsyncRewritingSearchClient):
    """An ``opensearchpy.AsyncOpenSearch`` client whose ``search()`` and ``msearch()`` rewrite text queries first.

    Args:
        client: The ``opensearchpy.AsyncOpenSearch`` to wrap.
        rewriter: Makes the rewrites; None sends every search as written.
        **options: The stage's options, :class:`~tsqr_plugins.adapters.stage.StageSettings`'s fields
            (see :class:`AsyncRewritingSearchClient`).

    Raises:
        MissingDependencyError: The ``opensearch`` extra is not installed.
        InputError: ``client`` is not an ``opensearchpy.AsyncOpenSearch``, or an option is invalid.
    """

    def __init__(self, client: Any, rewriter: Rewriter | None, **options: Any):
        opensearchpy = require("opensearchpy", "opensearch", "the OpenSearch stage")
        if not isinstance(client, opensearchpy.AsyncOpenSearch):
            raise InputError(f"client must be an opensearchpy.AsyncOpenSearch, got {type(client).__name__}")
        super().__init__(client, rewriter, **options)
