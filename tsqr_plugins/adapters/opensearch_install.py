"""`tsqr opensearch install|uninstall`: the native OpenSearch stage, with no Python in the search path.

Install (idempotent): trust the service's endpoint in ml-commons' cluster settings, create the
HTTP connector to ``tsqr serve``'s ``/v1/rewrite``, register and deploy the remote model, create the
search pipelines (write-in-place ``<name>-rewrite``; template variant ``<name>-rewrite-template``)
and, optionally, the index template and BRIGHT ingest pipeline. Every document sent is built by
``engine_configs`` (the same JSON as in ``integrations/opensearch/``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from ..errors import InputError, ServerUnavailableError
from . import engine_configs as configs

logger = logging.getLogger(__name__)

TRUSTED = "plugins.ml_commons.trusted_connector_endpoints_regex"
PRIVATE_IP = "plugins.ml_commons.connector.private_ip_enabled"
# ml-commons tasks that will not change state again (ml-commons MLTaskState).
FINAL_TASK_STATES = ("FAILED", "CANCELLED", "COMPLETED_WITH_ERROR", "EXPIRED", "UNREACHABLE")
# Before ml-commons 2.19.1.0 the ml_inference processor never sees `ignore_failure` (core strips it
# from the config before the factory reads it; fixed by ml-commons #3564): a failing service fails
# the search instead of falling back to the original query.
FAIL_OPEN_SINCE = (2, 19, 1)
# Where install records the settings it found, to restore them on uninstall.
RESTORE_PARAMETER = "tsqr_restore"
CONNECTORS = "/_plugins/_ml/connectors/_search"


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
            raise InputError(f"OpenSearch refused {method} {path} ({response.status_code}): {response.text[:500]}")
        return response.json() if response.content else {}

    # -- install ------------------------------------------------------------------------------

    def install(self, service_url: str, name: str = configs.DEFAULT_NAME, field: str = configs.DEFAULT_FIELD,
                api_key: str | None = None, index_template: bool = True) -> dict[str, str]:
        configs.service_endpoint(service_url)  # a bad URL fails before anything is changed
        ml_commons = self.warn_if_not_fail_open()
        existing = self._search(CONNECTORS, name)
        previous = _ours(existing)
        if existing and previous is None:  # refused before any setting is changed
            raise InputError(f"a connector named {name!r} exists that tsqr did not create; choose another --name")
        restore = json.loads(previous["parameters"][RESTORE_PARAMETER]) if previous else None
        settings_before = self.trust(service_url)
        connector_id = self.ensure_connector(service_url, name, api_key, restore or settings_before, previous)
        model_id = self.ensure_model(connector_id, name)
        self.deploy(model_id)
        pipelines = {f"{name}-rewrite": configs.rewrite_pipeline(model_id, field, ml_commons),
                     f"{name}-rewrite-template": configs.template_pipeline(model_id, ml_commons)}
        for pipeline, document in pipelines.items():
            self._call("PUT", f"/_search/pipeline/{pipeline}", document)
        installed = {"connector_id": connector_id, "model_id": model_id, "search_pipelines": ", ".join(pipelines)}
        if index_template:
            self._call("PUT", f"/_index_template/{name}", configs.index_template(name, field))
            self._call("PUT", f"/_ingest/pipeline/{name}-bright", configs.ingest_pipeline(field))
            installed.update(index_template=name, ingest_pipeline=f"{name}-bright")
        return installed

    def versions(self) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        """(OpenSearch version, ml-commons version or None when the plugin is absent)."""
        engine = _version(self._call("GET", "/").get("version", {}).get("number", "0"))
        plugins = self._call("GET", "/_cat/plugins?format=json")
        ml = [_version(p.get("version", "0")) for p in plugins if p.get("component") == "opensearch-ml"]
        return engine, (ml[0] if ml else None)

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

    @staticmethod
    def _effective(settings: dict[str, dict], key: str) -> tuple[str, Any]:
        """(scope that decides, its value): transient overrides persistent overrides defaults."""
        for scope in ("transient", "persistent", "defaults"):
            if key in settings[scope]:
                return scope, settings[scope][key]
        return "defaults", None

    def trust(self, service_url: str) -> dict:
        """Add the service to the effective trusted endpoints (built-in defaults kept) and allow
        private addresses when the service resolves to one. Returns what it found, to restore."""
        settings = self._settings()
        before = {key: {**{scope: settings[scope].get(key) for scope in ("persistent", "transient")},
                        "effective": self._effective(settings, key)[1]}
                  for key in (TRUSTED, PRIVATE_IP)}
        scope, regexes = self._effective(settings, TRUSTED)
        regexes = list(regexes or [])
        wanted = configs.trusted_endpoint_regex(service_url)
        target = "transient" if scope == "transient" else "persistent"
        update: dict[str, dict] = {}
        if wanted not in regexes:
            update.setdefault(target, {})[TRUSTED] = regexes + [wanted]
        if configs.is_private_host(service_url):
            scope, enabled = self._effective(settings, PRIVATE_IP)
            if str(enabled).lower() != "true":
                update.setdefault("transient" if scope == "transient" else "persistent", {})[PRIVATE_IP] = True
        if update:
            self._call("PUT", "/_cluster/settings", update)
        return before

    def restore_settings(self, before: dict, endpoint_regex: str) -> None:
        """Undo ``trust``: our regex leaves the list; each scope we changed gets its value back
        (unset, if it was) unless someone changed it since, then only our entry is removed."""
        settings = self._settings()
        update: dict[str, dict] = {}
        recorded = before.get(TRUSTED, {})
        for scope in ("persistent", "transient"):
            current = settings[scope].get(TRUSTED)
            if current is None or endpoint_regex not in current:
                continue
            remaining = [r for r in current if r != endpoint_regex]
            unchanged_since = remaining == list(recorded.get("effective") or [])
            update.setdefault(scope, {})[TRUSTED] = recorded.get(scope) if unchanged_since else remaining
        for scope in ("persistent", "transient"):
            old = before.get(PRIVATE_IP, {}).get(scope)
            if settings[scope].get(PRIVATE_IP) != old:
                update.setdefault(scope, {})[PRIVATE_IP] = old
        if update:
            self._call("PUT", "/_cluster/settings", update)

    def ensure_connector(self, service_url: str, name: str, api_key: str | None, restore: dict,
                         previous: dict | None) -> str:
        """Our connector for this service: ``previous`` (tsqr's connector of this name, if any) when
        it is the same, else a new one in its place."""
        wanted = configs.connector(service_url, name, api_key=api_key)
        wanted["parameters"][RESTORE_PARAMETER] = json.dumps(restore, sort_keys=True)
        if previous is not None:
            if _same_connector(previous, wanted) and api_key is None:
                return previous["_id"]
            # outdated (another URL, body or version of tsqr) or a key we cannot compare: replace it
            self._remove_models_and_connector(name)
        return self._call("POST", "/_plugins/_ml/connectors/_create", wanted)["connector_id"]

    def ensure_model(self, connector_id: str, name: str) -> str:
        for hit in self._search("/_plugins/_ml/models/_search", name):
            if hit.get("_source", {}).get("connector_id") == connector_id:
                return hit["_id"]
        answer = self._call("POST", "/_plugins/_ml/models/_register", configs.model_registration(connector_id, name))
        model_id = answer.get("model_id") or self._wait_task(answer["task_id"]).get("model_id")
        if not model_id:
            raise InputError(f"OpenSearch did not return a model id for {name!r}: {answer}")
        return model_id

    def deploy(self, model_id: str) -> None:
        answer = self._call("POST", f"/_plugins/_ml/models/{model_id}/_deploy")
        if answer.get("task_id") and answer.get("status") not in ("COMPLETED", "DEPLOYED"):
            self._wait_task(answer["task_id"])

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

    def _search(self, path: str, name: str) -> list[dict]:
        body = {"query": {"term": {"name.keyword": name}}, "size": 10}
        hits = self._call("POST", path, body, missing_ok=True).get("hits", {}).get("hits", [])
        # Model searches also return the chunks of local models; keep whole documents named so.
        return [h for h in hits if h.get("_source", {}).get("name") == name and "chunk_number" not in h.get("_source", {})]

    # -- uninstall ----------------------------------------------------------------------------

    def uninstall(self, name: str = configs.DEFAULT_NAME, index_template: bool = True) -> list[str]:
        """Remove what install created and put the cluster settings it changed back as they were."""
        removed = []
        for pipeline in (f"{name}-rewrite", f"{name}-rewrite-template"):
            if self._call("DELETE", f"/_search/pipeline/{pipeline}", missing_ok=True):
                removed.append(f"search pipeline {pipeline}")
        connector = _ours(self._search(CONNECTORS, name))
        removed += self._remove_models_and_connector(name)
        if connector is not None:
            before = json.loads(connector["parameters"][RESTORE_PARAMETER])
            for action in connector.get("actions", []):
                self.restore_settings(before, configs.endpoint_regex(action["url"]))
            removed.append("cluster settings restored")
        if index_template:
            if self._call("DELETE", f"/_index_template/{name}", missing_ok=True):
                removed.append(f"index template {name}")
            if self._call("DELETE", f"/_ingest/pipeline/{name}-bright", missing_ok=True):
                removed.append(f"ingest pipeline {name}-bright")
        return removed

    def _remove_models_and_connector(self, name: str) -> list[str]:
        removed = []
        for hit in self._search("/_plugins/_ml/models/_search", name):
            self._call("POST", f"/_plugins/_ml/models/{hit['_id']}/_undeploy", missing_ok=True)
            self._call("DELETE", f"/_plugins/_ml/models/{hit['_id']}", missing_ok=True)
            removed.append(f"model {hit['_id']}")
        for hit in self._search(CONNECTORS, name):
            self._call("DELETE", f"/_plugins/_ml/connectors/{hit['_id']}", missing_ok=True)
            removed.append(f"connector {hit['_id']}")
        return removed


def _ours(hits: list[dict]) -> dict | None:
    """The connector tsqr installed among ``hits`` (it carries the restore record), with its id."""
    for hit in hits:
        source = hit.get("_source", {})
        if RESTORE_PARAMETER in source.get("parameters", {}):
            return {"_id": hit["_id"], **source}
    return None


def _same_connector(stored: dict, wanted: dict) -> bool:
    """Everything but the credential (ml-commons stores it encrypted) and the restore record."""
    def comparable(document: dict) -> dict:
        parameters = {k: v for k, v in document.get("parameters", {}).items() if k != RESTORE_PARAMETER}
        return {"description": document.get("description"), "version": str(document.get("version")),
                "protocol": document.get("protocol"), "parameters": parameters,
                # ml-commons stores the action type upper-cased (PREDICT)
                "actions": [{"action_type": str(a.get("action_type")).upper(), "method": str(a.get("method")).upper(),
                             **{k: a.get(k) for k in ("url", "headers", "request_body")}}
                            for a in document.get("actions", [])]}

    return comparable(stored) == comparable(wanted)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", str(text))[:4]) or (0,)


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))
