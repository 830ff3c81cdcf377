"""The JSON documents users install on Elasticsearch/OpenSearch: index template, ingest pipeline,
OpenSearch ml-commons connector/model/search pipelines, the Elasticsearch ``_inference`` endpoint.

Pure builders. ``tsqr opensearch install`` sends them; ``render_integrations`` writes them to
``integrations/`` (with placeholders) for users who apply them by hand, and a test keeps those
files equal to what these functions build. No model output is ever placed in any of them: the
connector sends the *query* to ``tsqr serve``, which builds the prompt server-side.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

from . import querydsl
from .errors import InputError
from .fusion import RRF_K

DEFAULT_NAME = "tsqr"
DEFAULT_FIELD = "text"
ANALYZER = "tsqr_english"
# The model output inside ml-commons' answer: the service's answer is the remote model's dataAsMap.
REWRITE_PATH = "$.inference_results[0].output[0].dataAsMap.rewrites[0].text"
MATCH_PATH = "$.inference_results[0].output[0].dataAsMap.match"
# The query the rrf pipeline searches with: the service's `query` (service/hybrid.py).
HYBRID_PATH = "$.inference_results[0].output[0].dataAsMap.query"
PLACEHOLDER_SERVICE_URL = "http://127.0.0.1:8000"


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]{0,99}", name):
        raise InputError(f"a name must be lowercase letters, digits, '-' or '_', got {name!r}")
    return name


def _check_field(field: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_\-.]{0,199}", field):
        raise InputError(f"a field name must be letters, digits, '_', '-' or '.', got {field!r}")
    return field


def service_endpoint(service_url: str) -> str:
    """``<service>/v1/rewrite`` for a service base URL (with or without ``/v1``)."""
    parts = urlsplit(service_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"the service URL must be http(s)://host:port, got {service_url!r}")
    base = service_url.rstrip("/")
    base = base[: -len("/v1")] if base.endswith("/v1") else base
    return f"{base}/v1/rewrite"


def is_private_host(service_url: str) -> bool:
    """Whether ml-commons will see a loopback or private address (it then needs
    ``private_ip_enabled``). ml-commons resolves a host name when it calls, so a name
    (``host.docker.internal``, a Kubernetes service) is resolved here too; resolution from this
    machine is what can be checked, and a name that does not resolve here counts as public."""
    host = urlsplit(service_url).hostname or ""
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(info[4][0].split("%")[0])
                         for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)]
        except (OSError, UnicodeError):
            return False
    return any(address.is_private or address.is_loopback or address.is_link_local for address in addresses)


def trusted_endpoint_regex(service_url: str) -> str:
    """A regex matching exactly the service's rewrite endpoint."""
    return endpoint_regex(service_endpoint(service_url))


def endpoint_regex(endpoint: str) -> str:
    """A trusted-endpoint regex matching exactly ``endpoint`` (a connector action's URL)."""
    return "^" + re.escape(endpoint) + "$"


# -- index side (both engines) -----------------------------------------------------------------


def index_template(name: str = DEFAULT_NAME, field: str = DEFAULT_FIELD, patterns: tuple[str, ...] = ("tsqr-*",)) -> dict:
    """BM25 k1=0.9 b=0.4 and Lucene's EnglishAnalyzer chain (what BRIGHT/pyserini index with);
    one shard so that ``_termvectors`` statistics are the whole index's (BM25Q needs them)."""
    _check_name(name)
    return {
        "index_patterns": list(patterns),
        "priority": 100,
        "_meta": {"description": f"{name}: BRIGHT/TongSearch BM25 settings", "managed_by": "tsqr"},
        "template": {
            "settings": {
                "number_of_shards": 1,
                "index": {"similarity": {"default": {"type": "BM25", "k1": querydsl.BM25_K1, "b": querydsl.BM25_B}}},
                "analysis": {
                    "filter": {
                        "tsqr_possessive": {"type": "stemmer", "language": "possessive_english"},
                        "tsqr_stop": {"type": "stop", "stopwords": "_english_"},
                    },
                    "analyzer": {
                        ANALYZER: {
                            "type": "custom",
                            "tokenizer": "standard",
                            "filter": ["tsqr_possessive", "lowercase", "tsqr_stop", "porter_stem"],
                        }
                    },
                },
            },
            "mappings": {
                "properties": {
                    "id": {"type": "keyword"},
                    _check_field(field): {"type": "text", "analyzer": ANALYZER},
                }
            },
        },
    }


def ingest_pipeline(field: str = DEFAULT_FIELD) -> dict:
    """BRIGHT-style documents ``{"id", "content"}`` → ``_id`` = id, ``content`` renamed to ``field``."""
    return {
        "description": "tsqr: BRIGHT-style documents (id, content) to the index template's fields",
        "processors": [
            {"set": {"field": "_id", "value": "{{{id}}}", "ignore_empty_value": True}},
            {"rename": {"field": "content", "target_field": _check_field(field), "ignore_missing": True}},
        ],
    }


# -- OpenSearch ml-commons ------------------------------------------------------------------------


# ml-commons 2.19+ refuses a connector without credentials ("Connector credential is null or empty
# list"); a service without a key gets this placeholder, never sent anywhere.
NO_CREDENTIAL = "unused"
# How long a pipeline search waits for its rewrite: the service is asked to answer (with the
# original query, if the model is slower) within the budget, and the connector waits a little longer.
DEFAULT_REWRITE_BUDGET_S = 10
CONNECT_TIMEOUT_S = 5
# what the service makes of one match query's rewrite (service/app.py takes these on the match path)
MATCH_MODES = ("replace", "concat", "adaptive")
MAX_CONNECTIONS = 30
MODEL_DESCRIPTION = "TongSearch-QR query rewriter (remote, through tsqr serve)"
GROUP_DESCRIPTION = "tsqr: TongSearch-QR query rewriter models (tsqr opensearch install)"


def connector(service_url: str, name: str = DEFAULT_NAME, mode: str = "replace", api_key: str | None = None,
              budget_s: int = DEFAULT_REWRITE_BUDGET_S) -> dict:
    """An HTTP connector to the service's ``/v1/rewrite``.

    The pipelines send an *object* (``query.match.<field>``, or ``ext.ml_inference``), which the
    ml_inference processor writes as JSON with Gson (``StringUtils.toJson``) and ml-commons inserts
    unescaped (``escapeRemoteInferenceInputData`` leaves JSON alone), so ``${parameters.match}``
    stands unquoted and the body is valid JSON whatever the query's text (a text alone would be
    escaped but not quoted, and a text that is itself a JSON object would not be escaped at all).
    The substitution is recursive (commons-text ``StringSubstitutor``): a query holding
    ``${parameters.<name>}`` would get that connector parameter's value, so ``mode`` and the budget
    are written into the body, not kept as parameters; a placeholder ml-commons cannot fill fails
    the call, and the search runs as sent.

    ``client_config``: ml-commons reads both timeouts as seconds (``HttpJsonConnectorExecutor``);
    its defaults were 30,000 (8 h) before 3.6.0.0 and 30 since, and it never retries a plain
    error (``max_retry_times`` 0, and only throttling is retried).
    """
    if mode not in MATCH_MODES:
        raise InputError(f"the pipelines' mode must be one of {', '.join(MATCH_MODES)}, got {mode!r}")
    if not (isinstance(budget_s, int) and 1 <= budget_s <= 300):
        raise InputError(f"the rewrite budget must be 1 to 300 whole seconds, got {budget_s!r}")
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = "Bearer ${credential.api_key}"
    body = {"match": "<match>", "mode": mode, "timeout": budget_s}
    return {
        "name": _check_name(name),
        "description": "TongSearch-QR query rewriting through tsqr serve (prompt built server-side)",
        "version": 1,
        "protocol": "http",
        "parameters": {},
        "credential": {"api_key": api_key or NO_CREDENTIAL},
        "client_config": {"connection_timeout": CONNECT_TIMEOUT_S, "read_timeout": budget_s + 2,
                          "max_connection": MAX_CONNECTIONS, "max_retry_times": 0},
        "actions": [{
            "action_type": "predict",
            "method": "POST",
            "url": service_endpoint(service_url),
            "headers": headers,
            "request_body": json.dumps(body).replace('"<match>"', "${parameters.match}"),
        }],
    }


def model_group(name: str = DEFAULT_NAME, access: dict | None = None) -> dict:
    """``POST _plugins/_ml/model_groups/_register``. ``access`` (``access_mode``, ``backend_roles``)
    only where model access control is on: ml-commons refuses those fields otherwise."""
    return {"name": _check_name(name), "description": GROUP_DESCRIPTION, **(access or {})}


def model_registration(connector_id: str, name: str = DEFAULT_NAME, group_id: str | None = None) -> dict:
    # Without a group, ml-commons creates one named after the model, or adds a version to the group
    # of that name (TransportRegisterModelAction); install registers its own group first.
    return {
        "name": _check_name(name),
        "function_name": "remote",
        "description": MODEL_DESCRIPTION,
        "connector_id": connector_id,
        **({"model_group_id": group_id} if group_id else {}),
    }


# What ml-commons' ml_inference search request processor does with a search whose input path is
# missing (a bool, a term, a match on another field), read in MLInferenceSearchRequestProcessor
# .rewriteQueryString of each tag:
# - 2.16.0.0 to 2.19.1.0: the missing path throws inside a try whose catch answers with the
#   unchanged request when `ignore_missing` is set (and fails the search otherwise);
# - 2.19.2.0 on (checked to 3.8.0.0): with `ignore_missing` the check answers with the unchanged
#   request but does not return; the model is then called without the parameter, fails, and the
#   failure path answers again: the search runs twice and the node can splice a second answer into
#   the HTTP response. Without it, the missing path throws inside the try, whose catch answers
#   once through `ignore_failure`.
ANSWERS_TWICE_ON_IGNORE_MISSING_SINCE = (2, 19, 2)


def missing_path_flags(ml_commons: tuple[int, ...] | None = None) -> dict[str, bool]:
    """``ignore_missing``/``ignore_failure`` that pass a search without the input path through
    exactly once on this ml-commons version (None: the current lines, 2.19.2.0 and later)."""
    answers_twice = ml_commons is None or tuple(ml_commons[:3]) >= ANSWERS_TWICE_ON_IGNORE_MISSING_SINCE
    return {"ignore_missing": not answers_twice, "ignore_failure": True}


def rewrite_pipeline(model_id: str, field: str = DEFAULT_FIELD, ml_commons: tuple[int, ...] | None = None) -> dict:
    """Write-in-place (2.16+): ``{"match": {field: {"query": ...}}}`` (or the short form
    ``{"match": {field: "..."}}``: the processor reads the request as OpenSearch writes it out,
    always the long form) gets the rewrite as its value.

    When the service fails, or the search has no such match query, the search runs as sent, once
    (``missing_path_flags``).
    """
    # JsonPath: each dot nests, so a dotted field name (title.en) goes in brackets.
    field = _check_field(field)
    path = f"query.match['{field}']" if "." in field else f"query.match.{field}"
    return {
        "description": "tsqr: rewrite the match query with TongSearch-QR (fail-open)",
        "request_processors": [{
            "ml_inference": {
                "tag": "tsqr_rewrite",
                "model_id": model_id,
                "function_name": "remote",
                "full_response_path": True,
                # the whole match object goes to the service, which answers the object to search
                # with (querydsl.rewritten_match: what the client stages build for the same rewrite)
                "input_map": [{"match": path}],
                "output_map": [{path: MATCH_PATH}],
                **missing_path_flags(ml_commons),
            }
        }],
    }


def template_pipeline(model_id: str, ml_commons: tuple[int, ...] | None = None) -> dict:
    """Template-query variant (2.19+): the query is read from ``ext.ml_inference.query`` and the
    rewrite fills ``"${tsqr_rewrite}"`` in a ``template`` query, next to the original."""
    return {
        "description": "tsqr: rewrite into a template query that keeps the original (2.19+)",
        "request_processors": [{
            "ml_inference": {
                "tag": "tsqr_rewrite_template",
                "model_id": model_id,
                "function_name": "remote",
                "full_response_path": True,
                "input_map": [{"match": "ext.ml_inference"}],
                "output_map": [{"tsqr_rewrite": REWRITE_PATH}],
                **missing_path_flags(ml_commons),
            }
        }],
    }


# neural-search's score-ranker-processor (RRFProcessor) and its rank_constant: 2.19.0.0; weights
# (RRFScoreCombinationTechnique's `parameters.weights`): 3.1.0.0. Read at each tag.
RRF_SINCE = (2, 19)
RRF_WEIGHTS_SINCE = (3, 1)
# RRFNormalizationTechnique (3.6.0.0): rank_constant 1 to 10,000
RRF_K_RANGE = (1, 10_000)


def rrf_weights(weights: tuple[float, float] | list[float] | None) -> list[float] | None:
    """(original, rewrite) weights as neural-search takes them: each in [0, 1], summing to 1
    (ScoreCombinationUtil.validateWeights, 3.6.0.0). Any two non-negative numbers, not both 0,
    are scaled to that; scaling every weight by one factor leaves the RRF ranking as it was."""
    if weights is None:
        return None
    values = list(weights)
    if len(values) != 2 or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and 0 <= w < float("inf")
                                   for w in values) or sum(values) <= 0:
        raise InputError(f"RRF weights are two non-negative numbers (original, rewrite), not both 0; got {weights!r}")
    total = float(sum(values))
    return [round(w / total, 6) for w in values]


def rrf_pipeline(model_id: str, field: str = DEFAULT_FIELD, ml_commons: tuple[int, ...] | None = None,
                 rank_constant: int = RRF_K, weights: tuple[float, float] | list[float] | None = None) -> dict:
    """Reciprocal rank fusion of the original and the rewrite in one search (neural-search 2.19+):
    the caller's ``{"match": {field: ...}}`` becomes a ``hybrid`` query of the original match and
    the rewritten one (the service's answer ``query``, service/hybrid.py), and neural-search's
    ``score-ranker-processor`` fuses the two hit lists, each document scoring
    ``sum_i w_i / (rank_constant + rank_i)`` (RRFNormalizationTechnique, RRFScoreCombinationTechnique).

    The request processor reads the whole ``query.match`` (the field's name travels with it) and,
    to keep to ``field`` as ``rewrite_pipeline`` does, the field's own path (a parameter the
    connector's body does not use: a search without it runs as sent). It writes the answer over
    ``query``: ml-commons sets any path that exists, to any JSON, and parses the search again
    (MLInferenceSearchRequestProcessor.updateIncomeQueryObject/getSearchSourceBuilder, 2.19.0.0 to
    3.6.0.0). A search that is not rewritten (the service down, another query shape) is a plain
    query, which the score-ranker processor passes by (RRFProcessor.shouldSkipProcessor).

    A caller may also send the hybrid query itself, the original twice (``hybrid.queries[0]`` and
    ``[1]``, matches on ``field``), to page (``from`` > 0 needs ``pagination_depth``, which the
    pipeline cannot know: HybridCollectorManager, 3.6.0.0) or filter: a first processor writes the
    rewrite into the second sub-query in place, as ``rewrite_pipeline`` does; without a rewrite
    both stay the original. It runs before the other, which would otherwise see its own hybrid.
    """
    field = _check_field(field)
    if isinstance(rank_constant, bool) or not isinstance(rank_constant, int) \
            or not RRF_K_RANGE[0] <= rank_constant <= RRF_K_RANGE[1]:
        raise InputError(f"the RRF rank constant must be a whole number from {RRF_K_RANGE[0]} to {RRF_K_RANGE[1]} "
                         f"(neural-search's range), got {rank_constant!r}")
    path = f"query.match['{field}']" if "." in field else f"query.match.{field}"
    second = f"query.hybrid.queries[1].match['{field}']" if "." in field else f"query.hybrid.queries[1].match.{field}"
    combination: dict = {"technique": "rrf", "rank_constant": rank_constant}
    scaled = rrf_weights(weights)
    if scaled is not None:
        combination["parameters"] = {"weights": scaled}
    return {
        "description": "tsqr: the original and the TongSearch-QR rewrite, fused by reciprocal rank (fail-open)",
        "request_processors": [{
            "ml_inference": {
                "tag": "tsqr_rewrite_rrf_hybrid",
                "model_id": model_id,
                "function_name": "remote",
                "full_response_path": True,
                "input_map": [{"match": second}],
                "output_map": [{second: MATCH_PATH}],
                **missing_path_flags(ml_commons),
            }
        }, {
            "ml_inference": {
                "tag": "tsqr_rewrite_rrf",
                "model_id": model_id,
                "function_name": "remote",
                "full_response_path": True,
                "input_map": [{"match": "query.match", "tsqr_field": path}],
                "output_map": [{"query": HYBRID_PATH}],
                **missing_path_flags(ml_commons),
            }
        }],
        "phase_results_processors": [{"score-ranker-processor": {"tag": "tsqr_rrf", "combination": combination}}],
    }


def template_search(query: str, field: str = DEFAULT_FIELD, original_boost: float = 1.0) -> dict:
    """A search body for the template pipeline: original and rewrite in one ``bool.should``."""
    _check_field(field)
    return {
        "query": {"template": {"bool": {"should": [
            {"match": {field: {"query": query, "boost": original_boost}}},
            {"match": {field: {"query": "${tsqr_rewrite}"}}},
        ]}}},
        "ext": {"ml_inference": {"query": query}},
    }


def cluster_settings(service_url: str, existing_regexes: list[str] | None = None) -> dict:
    """Trust the service's endpoint (kept alongside existing entries) and allow private IPs if needed."""
    regexes = list(existing_regexes or [])
    wanted = trusted_endpoint_regex(service_url)
    if wanted not in regexes:
        regexes.append(wanted)
    persistent: dict = {"plugins.ml_commons.trusted_connector_endpoints_regex": regexes}
    if is_private_host(service_url):
        persistent["plugins.ml_commons.connector.private_ip_enabled"] = True
    return {"persistent": persistent}


# -- Elasticsearch ----------------------------------------------------------------------------


def elasticsearch_inference_endpoint(service_url: str, model: str = "tsqr-rewrite") -> dict:
    """``PUT _inference/completion/<id>``: the openai service with a custom url at the service's
    OpenAI-compatible endpoint, model ``tsqr-rewrite``: the input text is a query and the answer
    its rewrite (the paper's prompt and sampling, server-side; the query itself if rewriting fails).
    Elasticsearch calls the endpoint once when it is created ("how big"), so start ``tsqr serve``
    first. Limits: Elasticsearch cannot set temperature or max tokens per call."""
    base = service_endpoint(service_url)[: -len("/v1/rewrite")]
    return {
        "service": "openai",
        "service_settings": {"api_key": "<TSQR_API_KEY or any string>", "model_id": model,
                             "url": f"{base}/v1/chat/completions"},
    }


def elasticsearch_custom_endpoint(service_url: str, budget_s: int = DEFAULT_REWRITE_BUDGET_S) -> dict:
    """``PUT _inference/completion/<id>`` with the ``custom`` service (Elasticsearch 8.19 / 9.1+,
    x-pack inference, an Enterprise or trial licence): ``/v1/rewrite`` called directly, no chat
    shape in between. Read in x-pack/plugin/inference .../services/custom: ``${input}`` is the first
    input written as a quoted JSON string (CompletionParameters, JsonUtils.toJson), so the template
    does not quote it; ``completion_result`` takes ``$`` then ``.field`` and ``[*]`` steps
    (MapPathExtractor); a ``${name}`` left after the substitution fails the call
    (ValidatingSubstitutor), so a query holding one is an error, not a fallback."""
    body = json.dumps({"queries": ["<input>"], "mode": "replace", "timeout": budget_s}).replace('"<input>"', "${input}")
    return {
        "service": "custom",
        "service_settings": {
            "url": service_endpoint(service_url),
            "headers": {"Content-Type": "application/json", "Authorization": "Bearer ${api_key}"},
            "secret_parameters": {"api_key": "<TSQR_API_KEY or any string>"},
            "request": body,
            "response": {"json_parser": {"completion_result": "$.rewrites[*].text"}},
        },
    }


# -- rendering for integrations/ ----------------------------------------------------------------


def rendered_documents() -> dict[str, dict]:
    """Every document with placeholders, by the path it has under ``integrations/``."""
    url = PLACEHOLDER_SERVICE_URL
    return {
        "elasticsearch/index-template.json": index_template(),
        "elasticsearch/ingest-pipeline.json": ingest_pipeline(),
        "elasticsearch/inference-endpoint.json": elasticsearch_inference_endpoint(url),
        "elasticsearch/inference-endpoint-custom.json": elasticsearch_custom_endpoint(url),
        "opensearch/index-template.json": index_template(),
        "opensearch/ingest-pipeline.json": ingest_pipeline(),
        "opensearch/cluster-settings.json": cluster_settings(url),
        "opensearch/connector.json": connector(url),
        "opensearch/model-group.json": model_group(),
        "opensearch/model.json": model_registration("<connector_id>", group_id="<model_group_id>"),
        "opensearch/search-pipeline-rewrite.json": rewrite_pipeline("<model_id>"),
        "opensearch/search-pipeline-template.json": template_pipeline("<model_id>"),
        "opensearch/search-pipeline-rrf.json": rrf_pipeline("<model_id>"),
        "opensearch/search-template-example.json": template_search("Why do moths circle street lamps?"),
    }


def as_file_text(document: dict) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def render_integrations(root: Path) -> list[Path]:
    written = []
    for relative, document in rendered_documents().items():
        path = Path(root) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(as_file_text(document), encoding="utf-8")
        written.append(path)
    return written
