"""Elasticsearch: the TongSearch-QR query-transform stage around the official Python client.

    from elasticsearch import Elasticsearch
    from tsqr_plugins import Rewriter, load_backend
    from tsqr_plugins.adapters.elasticsearch import RewritingElasticsearch

    es = RewritingElasticsearch(Elasticsearch("http://127.0.0.1:9200"), Rewriter(load_backend("openai")))
    es.search(index="docs", query={"match": {"text": "why do moths circle lamps?"}})

Elasticsearch has no search-request pipeline, so the stage runs in the client (as Haystack and
LangChain do); non-Python callers use ``tsqr proxy``. See ``searchclient.py`` for the behaviour.
"""

from __future__ import annotations

from typing import Any

from ..core import Rewriter
from ..errors import InputError
from ..lazy import require
from .searchclient import AsyncRewritingSearchClient, RewritingSearchClient


class RewritingElasticsearch(RewritingSearchClient):
    """An ``elasticsearch.Elasticsearch`` client whose ``search()`` and ``msearch()`` rewrite text queries first.

    Args:
        client: The ``elasticsearch.Elasticsearch`` to wrap.
        rewriter: Makes the rewrites; None sends every search as written.
        **options: The stage's options, :class:`~tsqr_plugins.adapters.stage.StageSettings`'s fields
            (see :class:`RewritingSearchClient`).

    Raises:
        MissingDependencyError: The ``elasticsearch`` extra is not installed.
        InputError: ``client`` is not an ``elasticsearch.Elasticsearch``, or an option is invalid.
    """

    BODY_AS_KEYWORDS = True

    def __init__(self, client: Any, rewriter: Rewriter | None, **options: Any):
        elasticsearch = require("elasticsearch", "elasticsearch", "the Elasticsearch stage")
        if not isinstance(client, elasticsearch.Elasticsearch):
            raise InputError(f"client must be an elasticsearch.Elasticsearch, got {type(client).__name__}")
        super().__init__(client, rewriter, **options)


class AsyncRewritingElasticsearch(AsyncRewritingSearchClient):
    """An ``elasticsearch.AsyncElasticsearch`` client whose ``search()`` and ``msearch()`` rewrite text queries first.

    Args:
        client: The ``elasticsearch.AsyncElasticsearch`` to wrap.
        rewriter: Makes the rewrites; None sends every search as written.
        **options: The stage's options, :class:`~tsqr_plugins.adapters.stage.StageSettings`'s fields
            (see :class:`AsyncRewritingSearchClient`).

    Raises:
        MissingDependencyError: The ``elasticsearch`` extra is not installed.
        InputError: ``client`` is not an ``elasticsearch.AsyncElasticsearch``, or an option is invalid.
    """

    BODY_AS_KEYWORDS = True

    def __init__(self, client: Any, rewriter: Rewriter | None, **options: Any):
        elasticsearch = require("elasticsearch", "elasticsearch", "the Elasticsearch stage")
        if not isinstance(client, elasticsearch.AsyncElasticsearch):
            raise InputError(f"client must be an elasticsearch.AsyncElasticsearch, got {type(client).__name__}")
        super().__init__(client, rewriter, **options)
