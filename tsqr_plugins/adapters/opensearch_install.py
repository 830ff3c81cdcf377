"""`tsqr opensearch install|uninstall`: the native OpenSearch stage, with no Python in the search path.

Install (idempotent): trust the service's endpoint in ml-commons' cluster settings, create the
HTTP connector to ``tsqr serve``'s ``/v1/rewrite``, register and deploy the remote model, create the
search pipelines (write-in-place ``<name>-rewrite``; template variant ``<name>-rewrite-template``)
and, optionally, the index template and BRIGHT ingest pipeline. Every document sent is built by
``engine_configs`` (the same JSON as in ``integrations/opensearch/``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..errors import InputError, ServerUnavailableError
from . import engine_configs as configs

logger = logging.getLogger(__name__)

TRUSTED = "plugins.ml_commons.trusted_connector_endpoints_regex"


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
        self.trust(service_url)
        connector_id = self.ensure_connector(service_url, name, api_key)
        model_id = self.ensure_model(connector_id, name)
        self.deploy(model_id)
        pipelines = {f"{name}-rewrite": configs.rewrite_pipeline(model_id, field),
                     f"{name}-rewrite-template": configs.template_pipeline(model_id)}
        for pipeline, document in pipelines.items():
            self._call("PUT", f"/_search/pipeline/{pipeline}", document)
        installed = {"connector_id": connector_id, "model_id": model_id, "search_pipelines": ", ".join(pipelines)}
        if index_template:
            self._call("PUT", f"/_index_template/{name}", configs.index_template(name, field))
            self._call("PUT", f"/_ingest/pipeline/{name}-bright", configs.ingest_pipeline(field))
            installed.update(index_template=name, ingest_pipeline=f"{name}-bright")
        return installed

    def trust(self, service_url: str) -> None:
        current = self._call("GET", "/_cluster/settings?flat_settings=true")
        existing = []
        for scope in ("persistent", "transient"):
            value = current.get(scope, {}).get(TRUSTED)
            if isinstance(value, list):
                existing += [v for v in value if v not in existing]
        self._call("PUT", "/_cluster/settings", configs.cluster_settings(service_url, existing))

    def ensure_connector(self, service_url: str, name: str, api_key: str | None) -> str:
        wanted = configs.connector(service_url, name, api_key=api_key)
        for hit in self._search("/_plugins/_ml/connectors/_search", name):
            source = hit.get("_source", {})
            urls = [action.get("url") for action in source.get("actions", [])]
            if urls == [wanted["actions"][0]["url"]]:
                return hit["_id"]
            raise InputError(f"a connector named {name!r} exists for {urls}; run `tsqr opensearch uninstall "
                             f"--name {name}` first or choose another --name")
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
            if state in ("FAILED", "CANCELLED", "COMPLETED_WITH_ERROR"):
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
        """Remove what install created (cluster settings stay: other connectors may rely on them)."""
        removed = []
        for pipeline in (f"{name}-rewrite", f"{name}-rewrite-template"):
            if self._call("DELETE", f"/_search/pipeline/{pipeline}", missing_ok=True):
                removed.append(f"search pipeline {pipeline}")
        for hit in self._search("/_plugins/_ml/models/_search", name):
            self._call("POST", f"/_plugins/_ml/models/{hit['_id']}/_undeploy", missing_ok=True)
            self._call("DELETE", f"/_plugins/_ml/models/{hit['_id']}", missing_ok=True)
            removed.append(f"model {hit['_id']}")
        for hit in self._search("/_plugins/_ml/connectors/_search", name):
            self._call("DELETE", f"/_plugins/_ml/connectors/{hit['_id']}", missing_ok=True)
            removed.append(f"connector {hit['_id']}")
        if index_template:
            if self._call("DELETE", f"/_index_template/{name}", missing_ok=True):
                removed.append(f"index template {name}")
            if self._call("DELETE", f"/_ingest/pipeline/{name}-bright", missing_ok=True):
                removed.append(f"ingest pipeline {name}-bright")
        return removed
