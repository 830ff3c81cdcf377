"""`tsqr opensearch install|uninstall`: the native OpenSearch stage, with no Python in the search path.

Install (idempotent): a model group of its own, the cluster settings ml-commons needs for the
service's endpoint, the HTTP connector to ``tsqr serve``'s ``/v1/rewrite``, the remote model
(registered in the group, deployed, and checked with one real ``_predict``), the search pipelines
(write-in-place ``<name>-rewrite``; template variant ``<name>-rewrite-template``; where the node has
neural-search 2.19+, reciprocal rank fusion ``<name>-rewrite-rrf``) and, optionally, the index
template and BRIGHT ingest pipeline. Every document sent is built by ``engine_configs``
(the same JSON as in ``integrations/opensearch/``).

What install creates carries tsqr's marker (the connector's ``tsqr_install`` record, the group's
description, the pipelines' processor tags, the template's ``_meta``); uninstall removes only
what carries it and nothing still referenced by something else, gives back only the settings no
other tsqr install needs (``opensearch_trust``), and reports what it had to leave.

A reinstall that changes the connector (another URL, API key, budget or tsqr version) builds the
new connector and model first, points the pipelines at them, and only then removes the old ones:
ml-commons refuses to delete a model a pipeline still names (409 with
``plugins.ml_commons.safe_delete_model``, ``DeleteModelTransportAction`` 2.19.0.0+), a deployed
model (400: undeploy first), or a connector a model still uses (409).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from .. import engine_configs as configs
from ..errors import InputError, ServerUnavailableError
from .opensearch_trust import TrustRecord, checked_before, plan_trust, plan_untrust

logger = logging.getLogger(__name__)

# ml-commons tasks that will not change state again (ml-commons MLTaskState).
FINAL_TASK_STATES = ("FAILED", "CANCELLED", "COMPLETED_WITH_ERROR", "EXPIRED", "UNREACHABLE")
# Before ml-commons 2.19.1.0 the ml_inference processor never sees `ignore_failure` (core strips it
# from the config before the factory reads it; fixed by ml-commons #3564): a failing service fails
# the search instead of falling back to the original query.
FAIL_OPEN_SINCE = (2, 19, 1)
# The install's record rides in the connector's description, after this marker. Not in its
# parameters: ml-commons substitutes ${parameters.*} inside a query too, so a search could pull a
# parameter into the body sent to the service (and back into its own query on a fallback).
RECORD_MARKER = "\ntsqr install record (do not edit): "
LEGACY_RECORD = "tsqr_restore"     # the parameter where an older tsqr kept the settings it found
ACCESS_CONTROL = "plugins.ml_commons.model_access_control_enabled"
CONNECTORS = "/_plugins/_ml/connectors/_search"
MODELS = "/_plugins/_ml/models/_search"
GROUPS = "/_plugins/_ml/model_groups/_search"
AGENTS = "/_plugins/_ml/agents/_search"
MODEL_ACCESS = ("public", "restricted", "private")
CHECK_QUERY = "tsqr install check: why do moths circle street lamps?"
KDF_ITERATIONS = 200_000
MAX_KDF_ITERATIONS = 2_000_000
LOCK_INDEX = "tsqr_install_lock"  # outside the index template's tsqr-* pattern
LOCK_STALE_S = 600
NEURAL_SEARCH = "opensearch-neural-search"  # its component in _cat/plugins
DEPLOYED_STATES = ("DEPLOYED", "DEPLOYING", "PARTIALLY_DEPLOYED", "LOADED", "LOADING", "PARTIALLY_LOADED")


class RefusedError(InputError):
    """OpenSearch answered 4xx; ``status`` says which."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass
class Connector:
    """A tsqr connector on the cluster, with its install record."""

    id: str
    name: str
    source: dict
    record: TrustRecord
    key_digest: str = ""
    # models known to use it: one registered a moment ago may not be searchable yet
    models: set[str] = field(default_factory=set)


def with_record(document: dict, record: TrustRecord, digest: str) -> dict:
    """The connector document carrying the install's record in its description, base64url-encoded:
    ml-commons 3.1+ takes only letters, digits, spaces and .,!?():@-_'/" there (StringUtils
    .SAFE_INPUT_PATTERN, MLCreateConnectorRequest.validate)."""
    note = json.dumps({"format": 2, "trust": record.to_dict(), "key": digest}, sort_keys=True)
    encoded = base64.urlsafe_b64encode(note.encode()).decode().rstrip("=")
    return {**document, "description": document["description"] + RECORD_MARKER + encoded}


def read_record(source: dict, created: list[dict]) -> tuple[TrustRecord, str] | None:
    """(record, key digest) of a connector tsqr made, None for any other. ``created``: the tsqr
    connectors found so far, earliest first (an older tsqr's record is read against the first)."""
    actions = source.get("actions")
    if not isinstance(actions, list) or len(actions) != 1 or not isinstance(actions[0], dict):
        return None
    url, body = str(actions[0].get("url", "")), str(actions[0].get("request_body", ""))
    if not url.endswith("/v1/rewrite") or "${parameters." not in body:
        return None  # not a connector to a tsqr serve, whatever it carries
    description = str(source.get("description", ""))
    if RECORD_MARKER in description:
        encoded = description.split(RECORD_MARKER, 1)[1].strip()
        data = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        if not isinstance(data, dict) or not isinstance(data.get("key", ""), str):
            raise ValueError("not a tsqr install record")
        record = TrustRecord.from_dict(data.get("trust"))
        # what the install needs follows from the connector's own URL, whatever the record claims
        record = replace(record, regex=configs.endpoint_regex(url), private=configs.is_private_host(url))
        return record, data.get("key", "")
    legacy = (source.get("parameters") or {}).get(LEGACY_RECORD)
    if legacy is None:
        return None
    own = checked_before(json.loads(legacy))  # a record that does not read marks no tsqr connector
    before = created[0]["before"] if created else own
    return TrustRecord.from_legacy(before, configs.endpoint_regex(url), configs.is_private_host(url)), ""


@dataclass(frozen=True)
class User:
    """The installing user as the security plugin names them (authinfo)."""

    name: str
    admin: bool


@dataclass
class Report:
    """What an install or uninstall did, and what it left and why."""

    done: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def key_digest(api_key: str | None, salt: str | None = None, iterations: int = KDF_ITERATIONS) -> str:
    """A salted, slow digest of the service's API key (kept in the connector's record, where
    ml-commons keeps the key itself encrypted), to notice a changed key without storing it."""
    if not api_key:
        return ""
    salt = salt or secrets.token_hex(8)
    digest = hashlib.pbkdf2_hmac("sha256", api_key.encode(), bytes.fromhex(salt), iterations).hex()
    return f"pbkdf2-sha256${iterations}${salt}${digest}"


def same_key(stored: str, api_key: str | None) -> bool:
    """Whether ``stored`` is the digest of ``api_key`` (a malformed one never is, and an iteration
    count past MAX_KDF_ITERATIONS is not computed: a record is read from the cluster)."""
    if not stored or not api_key:
        return not stored and not api_key
    try:
        kind, iterations, salt, _ = stored.split("$")
        if kind != "pbkdf2-sha256" or not 1 <= int(iterations) <= MAX_KDF_ITERATIONS:
            return False
        return secrets.compare_digest(stored.encode(), key_digest(api_key, salt, int(iterations)).encode())
    except (ValueError, UnicodeError):
        return False


class OpenSearchInstaller:
    def __init__(self, url: str, auth: tuple[str, str] | None = None, verify: bool = True, timeout: float = 60.0):
        import httpx

        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, auth=auth, verify=verify, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, body: Any = None, missing_ok: bool = False) -> dict:
        import httpx

        try:
            response = self.http.request(method, path, json=body)
        except httpx.HTTPError as error:
            raise ServerUnavailableError(f"OpenSearch at {self.url} is unreachable ({error}); check --url") from error
        if response.status_code == 404 and missing_ok:
            return {}
        if response.status_code >= 400:
            raise RefusedError(f"OpenSearch refused {method} {path} ({response.status_code}): {response.text[:500]}",
                               response.status_code)
        return response.json() if response.content else {}

    def _hits(self, path: str, query: dict, page: int = 500) -> list[dict]:
        """Every hit of an ml-commons search, page by page up to the index's 10,000-hit window
        (a missing index: none)."""
        hits: list[dict] = []
        while len(hits) < 10_000:
            body = {"query": query, "size": page, "from": len(hits), "sort": [{"_id": "asc"}]}
            batch = self._call("POST", path, body, missing_ok=True).get("hits", {}).get("hits", [])
            hits += batch
            if len(batch) < page:
                return hits
        logger.warning("%s: more than 10,000 documents; tsqr read the first 10,000", path)
        return hits

    # -- what is on the cluster ------------------------------------------------------------------

    def versions(self) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        """(OpenSearch version, ml-commons version or None when the plugin is absent)."""
        engine = _version(self._call("GET", "/").get("version", {}).get("number", "0"))
        ml = [_version(p.get("version", "0")) for p in self._plugins() if p.get("component") == "opensearch-ml"]
        return engine, (ml[0] if ml else None)

    def _plugins(self) -> list[dict]:
        return self._call("GET", "/_cat/plugins?format=json")

    def neural_search(self) -> tuple[int, ...] | None:
        """The neural-search plugin's version on the cluster (the lowest, if nodes differ), or None
        where any node lacks it: the rrf pipeline needs its hybrid query and score-ranker processor."""
        plugins = self._plugins()
        nodes = {p.get("name") for p in plugins}
        found = {p.get("name"): _version(p.get("version", "0")) for p in plugins if p.get("component") == NEURAL_SEARCH}
        if not found or set(found) != nodes:
            return None
        return min(found.values())

    def rrf_plan(self, weights: list[float] | None) -> str | None:
        """Why the rrf pipeline cannot be installed here (None: it can). Weights the node's
        neural-search cannot take are the caller's mistake: refused before anything changes."""
        version = self.neural_search()
        if version is None:
            return (f"search pipeline <name>-rewrite-rrf: not installed, not every node has the neural-search plugin "
                    f"({NEURAL_SEARCH}), whose hybrid query and score-ranker-processor fuse the two searches (2.19+; "
                    "it is in OpenSearch's full distribution)")
        if version[:2] < configs.RRF_SINCE:
            return (f"search pipeline <name>-rewrite-rrf: not installed, neural-search {_dotted(version)} has no "
                    "score-ranker-processor (2.19+)")
        if weights is not None and version[:2] < configs.RRF_WEIGHTS_SINCE:
            raise InputError(f"neural-search {_dotted(version)} takes no RRF weights (3.1+); install without --rrf-weights")
        return None

    def warn_if_not_fail_open(self) -> tuple[int, ...]:
        """The ml-commons version; refuses a node without it, warns when it cannot fall back."""
        engine, ml = self.versions()
        if ml is None:
            raise InputError(f"OpenSearch {_dotted(engine)} at {self.url} has no ml-commons plugin "
                             "(opensearch-ml); the search pipeline needs it")
        if ml[:3] < FAIL_OPEN_SINCE:
            logger.warning("ml-commons %s ignores ignore_failure in search pipelines (fixed in 2.19.1.0): "
                           "when tsqr serve fails, pipeline searches fail instead of using the original query",
                           _dotted(ml))
        return ml

    def _settings(self) -> dict[str, dict]:
        answer = self._call("GET", "/_cluster/settings?include_defaults=true&flat_settings=true")
        return {scope: answer.get(scope, {}) for scope in ("persistent", "transient", "defaults")}

    def tsqr_connectors(self) -> list[Connector]:
        """Every connector a tsqr install made (a connector to a tsqr serve carrying a record),
        earliest first. One whose record does not read is left alone, with a warning."""
        hits = sorted(self._hits(CONNECTORS, {"match_all": {}}),
                      key=lambda hit: (str(hit.get("_source", {}).get("created_time", "")), hit["_id"]))
        found: list[Connector] = []
        user = self._user()
        for hit in hits:
            source = hit.get("_source", {})
            owner = (source.get("owner") or {}).get("name") if isinstance(source.get("owner"), dict) else None
            if owner and user and owner != user.name and not user.admin:
                # another user's connector: with access control, its record is that user's word,
                # not the cluster's history (ml-commons records the owner, MLCreateConnectorInput)
                logger.warning("connector %s belongs to %s; its tsqr record is not read", hit["_id"], owner)
                continue
            try:
                read = read_record(source, [c.record.to_dict() for c in found])
            except Exception as error:  # a damaged or planted record must not stop every install
                logger.warning("connector %s carries a tsqr record that does not read (%s); left alone",
                               hit["_id"], error)
                continue
            if read is not None:
                found.append(Connector(hit["_id"], str(source.get("name", "")), source, *read))
        return found

    def _group(self, name: str) -> dict | None:
        """The model group named ``name`` ({"_id", **source}), if any."""
        for hit in self._hits(GROUPS, {"term": {"name.keyword": name}}):
            if hit.get("_source", {}).get("name") == name:
                return {"_id": hit["_id"], **hit["_source"]}
        return None

    def _models(self, connector_ids: set[str]) -> list[dict]:
        """The models (whole documents, not chunks) using one of these connectors."""
        if not connector_ids:
            return []
        hits = self._hits(MODELS, {"bool": {"should": [{"match_phrase": {"connector_id": cid}} for cid in connector_ids]}})
        return [{"_id": h["_id"], **h["_source"]} for h in hits
                if h.get("_source", {}).get("connector_id") in connector_ids and "chunk_number" not in h["_source"]]

    def _users_of(self, model_id: str) -> list[str]:
        """Search and ingest pipelines and agents naming ``model_id`` anywhere (what ml-commons itself
        checks with safe_delete_model, DeleteModelTransportAction.checkDownstreamTaskBeforeDeleteModel)."""
        users = []
        for kind, path in (("search", "/_search/pipeline"), ("ingest", "/_ingest/pipeline")):
            for pipeline, document in self._call("GET", path, missing_ok=True).items():
                if model_id in _model_ids(document):
                    users.append(f"{kind} pipeline {pipeline}")
        for hit in self._hits(AGENTS, {"match_all": {}}):
            if model_id in _model_ids(hit.get("_source", {})):
                users.append(f"agent {hit['_id']}")
        return users

    def _user(self) -> "User | None":
        """Who is installing, when the security plugin knows (its authinfo); None without one."""
        if not hasattr(self, "_who"):
            try:
                who = self._call("GET", "/_plugins/_security/authinfo", missing_ok=True)
            except InputError:  # no security plugin: "no handler found"
                who = {}
            name = who.get("user_name")
            roles = set(who.get("roles") or []) | set(who.get("backend_roles") or [])
            self._who = User(name, "all_access" in roles) if name else None
        return self._who

    def _access_control_on(self) -> bool:
        """Whether ml-commons applies model access control: the setting, and an active security
        plugin that knows the caller (ModelAccessControlHelper treats a request without a user as
        access control off, and then refuses access fields). The plugin can be installed but
        disabled (plugins.security.disabled): its REST handlers, authinfo among them, are then absent."""
        from .opensearch_trust import effective

        _, enabled = effective(self._settings(), ACCESS_CONTROL)
        return str(enabled).lower() == "true" and self._user() is not None

    # -- install -------------------------------------------------------------------------------

    @contextmanager
    def _locked(self, patience_s: float = 60.0):
        """One install or uninstall at a time on a cluster: each reads, changes and writes the same
        settings and records. The lock is an index only one creator gets (OpenSearch answers
        resource_already_exists to the others); one left by a run that died goes after LOCK_STALE_S."""
        end = time.monotonic() + patience_s
        while True:
            body = {"settings": {"number_of_shards": 1, "number_of_replicas": 0},
                    "mappings": {"_meta": {"tsqr_lock": time.time(), "holder": f"{socket.gethostname()}:{os.getpid()}"}}}
            try:
                self._call("PUT", f"/{LOCK_INDEX}", body)
                break
            except RefusedError as error:
                if "resource_already_exists" not in str(error):
                    raise
            meta = self._call("GET", f"/{LOCK_INDEX}/_mapping", missing_ok=True).get(LOCK_INDEX, {})
            meta = meta.get("mappings", {}).get("_meta", {})
            taken = float(meta.get("tsqr_lock", 0) or 0)
            if time.time() - taken > LOCK_STALE_S:
                logger.warning("removing a tsqr install lock left at %s by %s", time.ctime(taken), meta.get("holder"))
                self._call("DELETE", f"/{LOCK_INDEX}", missing_ok=True)
                continue
            if time.monotonic() > end:
                raise ServerUnavailableError(f"another tsqr opensearch install or uninstall ({meta.get('holder')}) holds "
                                             f"{self.url} since {time.ctime(taken)}; try again, or delete the index "
                                             f"{LOCK_INDEX} if that run is gone")
            time.sleep(1.0)
        try:
            yield
        finally:
            self._call("DELETE", f"/{LOCK_INDEX}", missing_ok=True)

    def install(self, service_url: str, name: str = configs.DEFAULT_NAME, field: str = configs.DEFAULT_FIELD,
                api_key: str | None = None, index_template: bool = True, *, budget_s: int = configs.DEFAULT_REWRITE_BUDGET_S,
                model_access: str = "public", backend_roles: tuple[str, ...] = (), check: bool = True,
                rrf_k: int = configs.RRF_K, rrf_weights: tuple[float, float] | None = None,
                mode: str = "replace") -> dict[str, str]:
        """Install (or bring up to date) the stage named ``name``; returns what it made (and, under
        ``not_installed``, what it could not make on this cluster and why). ``mode``: what the
        service makes of each rewrite (replace, concat, adaptive), for every pipeline."""
        configs.connector(service_url, name, mode, api_key=api_key, budget_s=budget_s)  # bad input fails first
        configs.rrf_pipeline("check", field, rank_constant=rrf_k, weights=rrf_weights)
        with self._locked():
            return self._install(service_url, name, field, api_key, index_template, budget_s, model_access,
                                 backend_roles, check, rrf_k, rrf_weights, mode)

    def _install(self, service_url: str, name: str, field: str, api_key: str | None, index_template: bool,
                 budget_s: int, model_access: str, backend_roles: tuple[str, ...], check: bool,
                 rrf_k: int = configs.RRF_K, rrf_weights: tuple[float, float] | None = None,
                 mode: str = "replace") -> dict[str, str]:
        report = Report()
        wanted = configs.connector(service_url, name, mode, api_key=api_key, budget_s=budget_s)
        ml_commons = self.warn_if_not_fail_open()
        no_rrf = self.rrf_plan(configs.rrf_weights(rrf_weights))
        access = self._access_fields(model_access, backend_roles)
        connectors = self.tsqr_connectors()
        previous = [c for c in connectors if c.name == name]
        self._refuse_foreign(name, previous)
        group_id, new_group = self._ensure_group(name, access, report)

        try:
            current, model_id = self._current(service_url, wanted, api_key, name, group_id, connectors, previous, report)
        except BaseException:
            if new_group:  # a failed install leaves nothing
                self._delete_group(group_id, Report())
            raise
        if check:
            try:
                self.check(model_id, service_url)
            except InputError as error:
                if current.id in {c.id for c in previous}:
                    raise
                cleanup = Report()  # made just now: nothing of it stays
                self._remove(name, [current], connectors, cleanup)
                if new_group:
                    self._delete_group(group_id, cleanup)
                if cleanup.kept:
                    raise InputError(f"{error}\nbut these could not be removed: {'; '.join(cleanup.kept)}") from None
                raise
        pipelines = {f"{name}-rewrite": configs.rewrite_pipeline(model_id, field, ml_commons),
                     f"{name}-rewrite-template": configs.template_pipeline(model_id, ml_commons)}
        if no_rrf is None:
            pipelines[f"{name}-rewrite-rrf"] = configs.rrf_pipeline(model_id, field, ml_commons, rrf_k, rrf_weights)
        for pipeline, document in pipelines.items():
            self._call("PUT", f"/_search/pipeline/{pipeline}", document)
        stale = f"{name}-rewrite-rrf"
        if stale not in pipelines:  # an earlier install's, which would keep naming an outdated model
            document = self._call("GET", f"/_search/pipeline/{stale}", missing_ok=True).get(stale)
            if document is not None and _is_our_pipeline(document):
                self._call("DELETE", f"/_search/pipeline/{stale}", missing_ok=True)
        outdated = [c for c in previous if c.id != current.id]
        if outdated:  # only now: the pipelines no longer name their models
            self._remove(name, outdated, [c for c in self.tsqr_connectors() if c.id not in {o.id for o in outdated}], report)
        installed = {"connector_id": current.id, "model_id": model_id, "model_group_id": group_id,
                     "search_pipelines": ", ".join(pipelines)}
        if no_rrf is not None:
            installed["not_installed"] = no_rrf.replace("<name>", name)
        if index_template:
            self._call("PUT", f"/_index_template/{name}", configs.index_template(name, field))
            self._call("PUT", f"/_ingest/pipeline/{name}-bright", configs.ingest_pipeline(field))
            installed.update(index_template=name, ingest_pipeline=f"{name}-bright")
        for line in report.kept:
            logger.warning("left in place: %s", line)
        return installed

    def _current(self, service_url: str, wanted: dict, api_key: str | None, name: str, group_id: str,
                 connectors: list[Connector], previous: list[Connector], report: Report) -> tuple[Connector, str]:
        """This install's connector and deployed model: the standing ones when nothing changed,
        else new ones."""
        current = next((c for c in previous if _same_connector(c.source, wanted) and same_key(c.key_digest, api_key)), None)
        model_id = None
        if current is not None:
            model_id = next((m["_id"] for m in self._models({current.id}) if m.get("model_group_id") == group_id), None)
        if model_id is None:
            return self._create(service_url, wanted, api_key, name, group_id, connectors, report)
        # the same connector: still deployed (a node restart may have dropped it), settings still in place
        self._trust(service_url, [c.record for c in connectors if c.id != current.id])
        self.deploy(model_id)
        return current, model_id

    def _access_fields(self, model_access: str, backend_roles: tuple[str, ...]) -> dict:
        """The model group's access fields, where model access control is on (ml-commons refuses
        them otherwise: MLModelGroupManager.createModelGroup)."""
        if model_access not in MODEL_ACCESS:
            raise InputError(f"--model-access must be one of {', '.join(MODEL_ACCESS)}, got {model_access!r}")
        if (model_access == "restricted") != bool(backend_roles):
            raise InputError("backend roles go with --model-access restricted, and restricted needs at least one")
        if not self._access_control_on():
            if model_access != "public":
                raise InputError(f"model access control is off on {self.url} ({ACCESS_CONTROL}, or no security "
                                 "plugin): every model is public there, so --model-access does not apply")
            return {}
        # public by default: a private group (what ml-commons makes when none is said) would leave
        # every other user's pipeline searches unrewritten (predict answers 403, the search falls back)
        access = {"access_mode": model_access}
        if backend_roles:
            access["backend_roles"] = list(backend_roles)
        return access

    def _refuse_foreign(self, name: str, previous: list[Connector]) -> None:
        """Before anything changes: the names install uses must be free or tsqr's."""
        hits = self._hits(CONNECTORS, {"term": {"name.keyword": name}})
        for hit in hits:
            source = hit.get("_source", {})
            if source.get("name") != name or hit["_id"] in {c.id for c in previous}:
                continue
            owner = (source.get("owner") or {}).get("name") if isinstance(source.get("owner"), dict) else None
            if owner and self._user() and owner != self._user().name:
                raise InputError(f"a connector named {name!r} belongs to {owner}: install as {owner} or an admin, "
                                 "or choose another --name")
            raise InputError(f"a connector named {name!r} exists that tsqr did not create; choose another --name")
        group = self._group(name)
        if group is not None and not _is_our_group(group):
            raise InputError(f"a model group named {name!r} exists that tsqr did not create; choose another --name")
        for pipeline in pipeline_names(name):
            document = self._call("GET", f"/_search/pipeline/{pipeline}", missing_ok=True).get(pipeline)
            if document is not None and not _is_our_pipeline(document):
                raise InputError(f"a search pipeline {pipeline!r} exists that tsqr did not create; choose another --name")

    def _ensure_group(self, name: str, access: dict, report: Report) -> tuple[str, bool]:
        """The install's model group (id, whether made just now)."""
        group = self._group(name)
        if group is not None:
            mode, roles = access.get("access_mode"), sorted(access.get("backend_roles", []))
            if mode and (str(group.get("access", "")).lower() != mode or sorted(group.get("backend_roles") or []) != roles):
                # another --model-access than the group has (TransportUpdateModelGroupAction: owner or admin)
                self._call("PUT", f"/_plugins/_ml/model_groups/{group['_id']}", access)
                report.done.append(f"model group {group['_id']} now {mode}")
            return group["_id"], False
        answer = self._call("POST", "/_plugins/_ml/model_groups/_register", configs.model_group(name, access))
        report.done.append(f"model group {answer['model_group_id']}")
        return answer["model_group_id"], True

    def _trust(self, service_url: str, others: list[TrustRecord]) -> TrustRecord:
        update, record = plan_trust(self._settings(), configs.trusted_endpoint_regex(service_url),
                                    configs.is_private_host(service_url), others)
        if update:
            self._call("PUT", "/_cluster/settings", update)
        return record

    def _create(self, service_url: str, wanted: dict, api_key: str | None, name: str, group_id: str,
                connectors: list[Connector], report: Report) -> tuple[Connector, str]:
        """A new connector and model for this install (settings first: ml-commons reads them then).
        If anything fails, what was made and the settings it needed are taken back."""
        others = [c.record for c in connectors]
        record = self._trust(service_url, others)
        digest = key_digest(api_key)
        document = with_record(wanted, record, digest)
        try:
            connector_id = self._call("POST", "/_plugins/_ml/connectors/_create", document)["connector_id"]
        except BaseException:
            update = plan_untrust(self._settings(), record, others)
            if update:
                self._call("PUT", "/_cluster/settings", update)
            raise
        connector = Connector(connector_id, name, document, record, digest)
        report.done.append(f"connector {connector_id}")
        try:
            answer = self._call("POST", "/_plugins/_ml/models/_register",
                                configs.model_registration(connector_id, name, group_id))
            model_id = answer.get("model_id") or self._wait_task(answer["task_id"]).get("model_id")
            if not model_id:
                raise InputError(f"OpenSearch did not return a model id for {name!r}: {answer}")
            connector.models.add(model_id)
            self.deploy(model_id)
        except Exception:
            self._remove(name, [connector], connectors, Report())
            raise
        report.done.append(f"model {model_id}")
        return connector, model_id

    def deploy(self, model_id: str) -> None:
        # a remote model answers synchronously, COMPLETED (TransportDeployModelAction.deployRemoteModel)
        answer = self._call("POST", f"/_plugins/_ml/models/{model_id}/_deploy")
        if answer.get("task_id") and answer.get("status") not in ("COMPLETED", "DEPLOYED"):
            self._wait_task(answer["task_id"])

    def check(self, model_id: str, service_url: str) -> None:
        """One real ``_predict`` through the model: the node reaches the service and reads its answer."""
        try:
            answer = self._call("POST", f"/_plugins/_ml/models/{model_id}/_predict",
                                {"parameters": {"match": json.dumps({"query": CHECK_QUERY})}})
            text = answer["inference_results"][0]["output"][0]["dataAsMap"]["match"]["query"]
            if not isinstance(text, str):
                raise TypeError(f"the rewrite is {type(text).__name__}, not text")
        except RefusedError as error:
            raise InputError(f"installed, but a rewrite through OpenSearch failed: {error}\n"
                             f"{_likely_cause(str(error), service_url)}\n(nothing of this install was left "
                             "behind; --no-check installs without this check)") from None
        except (KeyError, IndexError, TypeError) as error:
            raise InputError(f"installed, but the answer through OpenSearch has no rewrite ({error}): is "
                             f"{service_url} a tsqr serve?") from None

    def _wait_task(self, task_id: str, deadline_s: float = 60.0) -> dict:
        end = time.monotonic() + deadline_s
        while True:
            task = self._call("GET", f"/_plugins/_ml/tasks/{task_id}")
            state = task.get("state")
            if state == "COMPLETED":
                return task
            if state in FINAL_TASK_STATES:
                raise InputError(f"ml-commons task {task_id} {state}: {task.get('error', '')}")
            if time.monotonic() > end:
                raise ServerUnavailableError(f"ml-commons task {task_id} still {state} after {deadline_s:.0f} s")
            time.sleep(0.5)

    # -- uninstall -----------------------------------------------------------------------------

    def uninstall(self, name: str = configs.DEFAULT_NAME, index_template: bool = True) -> Report:
        """Remove what install made under ``name`` and give back the settings only it needed."""
        with self._locked():
            return self._uninstall(name, index_template)

    def _uninstall(self, name: str, index_template: bool) -> Report:
        report = Report()
        for pipeline in pipeline_names(name):
            document = self._call("GET", f"/_search/pipeline/{pipeline}", missing_ok=True).get(pipeline)
            if document is None:
                continue
            if not _is_our_pipeline(document):
                report.kept.append(f"search pipeline {pipeline}: tsqr did not create it")
                continue
            self._call("DELETE", f"/_search/pipeline/{pipeline}", missing_ok=True)
            report.done.append(f"search pipeline {pipeline}")
        connectors = self.tsqr_connectors()
        ours = [c for c in connectors if c.name == name]
        self._remove(name, ours, [c for c in connectors if c.name != name], report)
        group = self._group(name)
        if group is not None and _is_our_group(group):
            self._delete_group(group["_id"], report)
        if index_template:
            self._remove_owned(f"/_index_template/{name}", f"index template {name}", report,
                               lambda d: any(t.get("index_template", {}).get("_meta", {}).get("managed_by") == "tsqr"
                                             for t in d.get("index_templates", [])))
            self._remove_owned(f"/_ingest/pipeline/{name}-bright", f"ingest pipeline {name}-bright", report,
                               lambda d: str(d.get(f"{name}-bright", {}).get("description", "")).startswith("tsqr:"))
        return report

    def _remove(self, name: str, connectors: list[Connector], staying: list[Connector], report: Report) -> None:
        """Remove ``connectors`` and their models, then give back the settings that no connector in
        ``staying`` (nor a connector that had to stay) needs. Settings are given back even when a
        removal fails; what stays is reported."""
        kept: list[Connector] = []
        group = self._group(name)
        try:
            for connector in connectors:
                if not self._remove_connector(connector, group["_id"] if group else None, report):
                    kept.append(connector)
        finally:
            leaving = {c.id for c in connectors} - {c.id for c in kept}
            others = [c.record for c in staying + kept if c.id not in leaving]
            settings = self._settings()
            for connector in connectors:
                if connector.id not in leaving:
                    continue
                update = plan_untrust(settings, connector.record, others)
                if update:
                    self._call("PUT", "/_cluster/settings", update)
                    settings = self._settings()
                    report.done.append(f"cluster settings given back ({connector.id})")

    def _remove_connector(self, connector: Connector, group_id: str | None, report: Report) -> bool:
        """The connector and the models tsqr registered on it (in the install's group, with its
        description), unless something still names them; whether the connector is gone. Another's
        model on it stays, and so does the connector."""
        whole = True
        ours = set(connector.models)
        for model in self._models({connector.id}):
            if model.get("model_group_id") == group_id and model.get("description") == configs.MODEL_DESCRIPTION:
                ours.add(model["_id"])
            elif model["_id"] not in ours:
                report.kept.append(f"model {model['_id']}: tsqr did not register it (it uses tsqr's connector)")
                whole = False
        for model_id in sorted(ours):
            users = self._users_of(model_id)  # before undeploying: a model in use is not stopped
            if users:
                report.kept.append(f"model {model_id}: {', '.join(users)} still use it")
                whole = False
                continue
            try:
                self._undeploy_and_delete(model_id)
                report.done.append(f"model {model_id}")
            except RefusedError as error:
                report.kept.append(f"model {model_id}: {error}")
                whole = False
        if not whole:
            report.kept.append(f"connector {connector.id}: its model stays")
            return False
        try:
            self._delete_patiently(f"/_plugins/_ml/connectors/{connector.id}")
        except RefusedError as error:  # a model tsqr did not make uses it
            report.kept.append(f"connector {connector.id}: {error}")
            return False
        report.done.append(f"connector {connector.id}")
        return True

    def _undeploy_and_delete(self, model_id: str, patience_s: float = 20.0) -> None:
        """ml-commons refuses (400) to delete a model that its model index says is deployed
        (DeleteModelTransportAction reads the document). Undeploy records the new state after it
        answers, and a deploy a moment earlier can record DEPLOYED after that (seen on 2.19.6 and
        3.6.0 right after install's check), so undeploy and delete are repeated until the delete
        is taken."""
        end = time.monotonic() + patience_s
        while True:
            self._call("POST", f"/_plugins/_ml/models/{model_id}/_undeploy", missing_ok=True)
            settle = time.monotonic() + 3
            while time.monotonic() < settle:
                state = self._call("GET", f"/_plugins/_ml/models/{model_id}", missing_ok=True).get("model_state")
                if state not in DEPLOYED_STATES:
                    break
                time.sleep(0.3)
            try:
                self._delete_patiently(f"/_plugins/_ml/models/{model_id}", patience_s=1.0, stale=_still_deployed)
                return
            except RefusedError as error:
                if not _still_deployed(error) or time.monotonic() > end:
                    raise

    def _delete_group(self, group_id: str, report: Report) -> None:
        try:
            self._delete_patiently(f"/_plugins/_ml/model_groups/{group_id}")
            report.done.append(f"model group {group_id}")
        except RefusedError as error:
            report.kept.append(f"model group {group_id}: it still holds models ({error})")

    def _delete_patiently(self, path: str, patience_s: float = 5.0, stale=None) -> None:
        """ml-commons decides some deletes on what its model index shows: a connector or model group
        is refused (409) while a search finds a model using it (DeleteConnectorTransportAction,
        DeleteModelGroupTransportAction), a model (400) while it reads deployed
        (DeleteModelTransportAction). A model deleted or undeployed a moment ago shows as it was until
        that index refreshes (about a second), so those refusals (``stale``) are retried briefly."""
        stale = stale or (lambda error: error.status == 409)
        end = time.monotonic() + patience_s
        while True:
            try:
                self._call("DELETE", path, missing_ok=True)
                return
            except RefusedError as error:
                if not stale(error) or time.monotonic() > end:
                    raise
                time.sleep(0.5)

    def _remove_owned(self, path: str, what: str, report: Report, ours) -> None:
        document = self._call("GET", path, missing_ok=True)
        if not document:
            return
        if not ours(document):
            report.kept.append(f"{what}: tsqr did not create it")
            return
        self._call("DELETE", path, missing_ok=True)
        report.done.append(what)


def pipeline_names(name: str) -> tuple[str, ...]:
    """The search pipelines an install named ``name`` may make (the rrf one only with neural-search)."""
    return (f"{name}-rewrite", f"{name}-rewrite-template", f"{name}-rewrite-rrf")


def _still_deployed(error: RefusedError) -> bool:
    return error.status == 400 and "deployed state" in str(error)


def _likely_cause(message: str, service_url: str) -> str:
    """What usually stands behind a failed ``_predict`` to the service (ml-commons' messages)."""
    lowered = message.lower()
    if "privilege to perform this operation on this model" in lowered:
        return ("likely cause: the installing user may not use the model (model access control): install as an "
                "admin or a user with one of the group's backend roles, or with --model-access public")
    if "private ip" in lowered or "restricted" in lowered:
        return ("likely cause: the service's address is private and ml-commons refuses it (private_ip_enabled; "
                "on 3.7+ also plugins.ml_commons.connector.restricted_ip_patterns in opensearch.yml)")
    if "trusted" in lowered or "regex" in lowered:
        return "likely cause: the service's URL is not in plugins.ml_commons.trusted_connector_endpoints_regex"
    if "401" in lowered or "403" in lowered or "unauthorized" in lowered:
        return "likely cause: the service wants an API key (--service-api-key-env) or the key differs"
    return (f"likely cause: the OpenSearch node cannot reach {service_url} as written: it resolves the host "
            "itself (in a container, 127.0.0.1 is the container; use an address the node can reach)")


def _model_ids(document: Any) -> set[str]:
    """Every ``model_id`` value in a pipeline document, at any depth."""
    found: set[str] = set()
    if isinstance(document, dict):
        for key, value in document.items():
            if key == "model_id" and isinstance(value, str):
                found.add(value)
            else:
                found |= _model_ids(value)
    elif isinstance(document, list):
        for value in document:
            found |= _model_ids(value)
    return found


def _is_our_pipeline(document: dict) -> bool:
    return any(str(p.get("ml_inference", {}).get("tag", "")).startswith("tsqr_rewrite")
               for p in document.get("request_processors", []))


def _is_our_group(group: dict) -> bool:
    # an older tsqr let ml-commons create the group, which took the model's description
    return group.get("description") in (configs.GROUP_DESCRIPTION, configs.MODEL_DESCRIPTION)


def _same_connector(stored: dict, wanted: dict) -> bool:
    """Everything but the credential (ml-commons stores it encrypted) and tsqr's records."""
    def number(value: Any) -> Any:
        try:
            return int(value)
        except (TypeError, ValueError):
            return value

    def comparable(document: dict) -> dict:
        parameters = {k: v for k, v in (document.get("parameters") or {}).items() if k != LEGACY_RECORD}
        client = {k: number(v) for k, v in (document.get("client_config") or {}).items() if k in wanted.get("client_config", {})}
        description = str(document.get("description", "")).split(RECORD_MARKER, 1)[0]
        return {"description": description, "version": str(document.get("version")),
                "protocol": document.get("protocol"), "parameters": parameters, "client_config": client,
                # ml-commons stores the action type upper-cased (PREDICT)
                "actions": [{"action_type": str(a.get("action_type")).upper(), "method": str(a.get("method")).upper(),
                             **{k: a.get(k) for k in ("url", "headers", "request_body")}}
                            for a in document.get("actions", [])]}

    return comparable(stored) == comparable(wanted)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", str(text))[:4]) or (0,)


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))
