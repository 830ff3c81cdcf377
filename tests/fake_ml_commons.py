"""A fake OpenSearch node with ml-commons *and the security plugin*, for model access control.

The security plugin is not served by Maven Central (opensearch-security 2.19.6.0 and 3.6.0.0 were
refused on 2026-12-04), so the real nodes of `make engines` run without it, and model access
control cannot be switched on there. This fake answers the REST calls `tsqr opensearch install`
makes, and nothing more; every behaviour that matters for access control cites the ml-commons
source it follows (tag 2.19.6.0 unless said; paths under plugin/src/main/java/org/opensearch/ml/):

- users come from HTTP basic auth, as the security plugin puts them into the thread context
  (RestActionUtils.getUserContext), and ``GET /_plugins/_security/authinfo`` names them (the
  security plugin's SecurityInfoAction);
- ``POST /_plugins/_ml/model_groups/_register`` (MLModelGroupManager.createModelGroup L103-130,
  L182-219, L328-335): with access control off, ``access_mode``/``backend_roles``/
  ``add_all_backend_roles`` are refused with 400 "You cannot specify model access control
  parameters ..."; with it on, no ``access_mode`` means restricted when backend roles are given,
  else PRIVATE, owned by the caller; backend roles only with restricted (400); a duplicate name is
  400 "The name you provided is already being used by a model group with ID: ..." (L95-99); a
  non-admin may name only backend roles they hold (validateRequestForAccessControl L213-217);
- ``PUT /_plugins/_ml/model_groups/<id>`` (TransportUpdateModelGroupAction L271-289): the owner or
  an admin changes the access fields;
- ``_register`` without ``model_group_id`` (TransportRegisterModelAction L174-197): the model joins
  the group named after it, or a new one made as above with no access fields (so PRIVATE when
  access control is on);
- ``_predict`` (TransportPredictionTaskAction L113-149, ModelAccessControlHelper
  .checkModelGroupPermission L196-224): admins and anyone when access control is off pass; public
  groups: everyone; private: the owner only; restricted: a shared backend role; otherwise 403
  "User Doesn't have privilege to perform this operation on this model". The search pipeline's
  ml_inference processor calls predict as the searching user (MLInferenceSearchRequestProcessor,
  no context stash), so a 403 here is a pipeline search that silently goes unrewritten.
"""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ACCESS_CONTROL = "plugins.ml_commons.model_access_control_enabled"
ACCESS_FIELDS = ("access_mode", "backend_roles", "add_all_backend_roles")


@dataclass
class FakeUser:
    name: str
    roles: tuple[str, ...] = ()
    admin: bool = False


@dataclass
class FakeNode:
    users: dict[str, FakeUser]
    access_control: bool = True
    # installed but switched off (plugins.security.disabled): no REST handlers, no user in the
    # thread context, so ml-commons applies no access control and refuses access fields
    security_active: bool = True
    persistent: dict = field(default_factory=dict)
    connectors: dict = field(default_factory=dict)
    groups: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    pipelines: dict = field(default_factory=dict)
    predictions: list = field(default_factory=list)  # (user, model id) of every allowed predict
    lock: dict | None = None
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    @property
    def controls_access(self) -> bool:  # ModelAccessControlHelper: the setting and a user to check
        return self.access_control and self.security_active

    def group_allows(self, group: dict, user: FakeUser) -> bool:
        # ModelAccessControlHelper.checkModelGroupPermission
        if not self.controls_access or user.admin or group.get("owner") is None:
            return True
        access = group.get("access")
        if access == "public":
            return True
        if access == "private":
            return group["owner"] == user.name
        return bool(set(group.get("backend_roles", [])) & set(user.roles))

    def create_group(self, body: dict, user: FakeUser) -> tuple[int, dict]:
        name = body.get("name")
        for group_id, group in self.groups.items():
            if group["name"] == name:
                return 400, error(f"The name you provided is already being used by a model group with ID: {group_id}.")
        if not self.controls_access:
            if any(body.get(key) for key in ACCESS_FIELDS):
                return 400, error("You cannot specify model access control parameters because the Security plugin or "
                                  "model access control is disabled on your cluster.")
            group = {"name": name, "description": body.get("description"), "access": "public", "owner": None}
        else:
            roles = body.get("backend_roles") or []
            mode = body.get("access_mode") or ("restricted" if roles or body.get("add_all_backend_roles") else "private")
            if roles and mode != "restricted":
                return 400, error("You can specify backend roles only for a model group with the restricted access mode.")
            if mode == "restricted" and not user.admin and not set(roles) <= set(user.roles):  # L213-217
                return 400, error("You don't have the backend roles specified.")
            group = {"name": name, "description": body.get("description"), "access": mode, "owner": user.name,
                     "backend_roles": roles}
        group_id = self.new_id("group")
        self.groups[group_id] = group
        return 200, {"model_group_id": group_id, "status": "CREATED"}


# ml-commons 2.19.6.0 MLCommonsSettings: the trusted-endpoint default (a part of it), cloud endpoints
DEFAULT_TRUSTED = ["^https://api\\.openai\\.com/.*$", "^https://api\\.cohere\\.ai/.*$"]
TRUSTED = "plugins.ml_commons.trusted_connector_endpoints_regex"


def cluster_settings(node: FakeNode, include_defaults: bool) -> dict:
    """GET _cluster/settings (flat): the defaults only with include_defaults (OpenSearch's
    RestClusterGetSettingsAction), and only for what no scope sets."""
    answer = {"persistent": dict(node.persistent), "transient": {}}
    if include_defaults:
        defaults = {ACCESS_CONTROL: str(node.access_control).lower(), TRUSTED: DEFAULT_TRUSTED}
        answer["defaults"] = {k: v for k, v in defaults.items() if k not in node.persistent}
    return answer


def error(reason: str) -> dict:
    return {"error": {"root_cause": [{"type": "status_exception", "reason": reason}], "reason": reason}}


def hits(documents: dict, keep=lambda source: True) -> dict:
    found = [{"_id": key, "_source": value} for key, value in documents.items() if keep(value)]
    return {"hits": {"total": {"value": len(found)}, "hits": found}}


def create_fake_node(node: FakeNode) -> Starlette:
    def user_of(request: Request) -> FakeUser | None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return None
        name = base64.b64decode(header[6:]).decode().split(":", 1)[0]
        return node.users.get(name)

    async def handle(request: Request):
        user = user_of(request)
        if user is None:
            return JSONResponse(error("Unauthorized"), status_code=401)
        path, method = request.url.path, request.method
        body = json.loads(await request.body() or b"null")
        if path == "/_cluster/settings" and method == "GET":
            return JSONResponse(cluster_settings(node, request.query_params.get("include_defaults") == "true"))
        status, answer = route(node, user, method, path, body)
        return JSONResponse(answer, status_code=status)

    return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST", "PUT", "DELETE"])])


def route(node: FakeNode, user: FakeUser, method: str, path: str, body) -> tuple[int, dict]:
    parts = [part for part in path.split("/") if part]
    if path == "/":
        return 200, {"version": {"number": "2.19.6"}}
    if path == "/_cat/plugins":
        return 200, [{"component": "opensearch-ml", "version": "2.19.6.0"},
                     {"component": "opensearch-security", "version": "2.19.6.0"}]
    if path == "/_plugins/_security/authinfo":  # opensearch-security SecurityInfoAction
        if not node.security_active:
            return 400, {"error": f"no handler found for uri [{path}] and method [{method}]"}
        return 200, {"user_name": user.name, "backend_roles": list(user.roles),
                     "roles": ["all_access"] if user.admin else []}
    if path == "/_plugins/_ml/agents/_search":  # no agent yet: ml-commons answers its missing index
        return 404, error("no such index [.plugins-ml-agent]")
    if path == "/_cluster/settings":
        if method == "PUT":
            for key, value in body.get("persistent", {}).items():
                if value is None:
                    node.persistent.pop(key, None)
                else:
                    node.persistent[key] = value
            return 200, {"acknowledged": True}
        return 200, cluster_settings(node, False)
    if parts[:3] == ["_plugins", "_ml", "connectors"]:
        if parts[3:] == ["_search"]:
            return 200, hits(node.connectors)
        if parts[3:] == ["_create"]:
            connector_id = node.new_id("connector")
            # TransportCreateConnectorAction L113-123: with access control the creator is its owner
            node.connectors[connector_id] = {**body, **({"owner": {"name": user.name}} if node.controls_access else {})}
            return 200, {"connector_id": connector_id}
        node.connectors.pop(parts[3], None)
        return 200, {"result": "deleted"}
    if parts[:3] == ["_plugins", "_ml", "model_groups"]:
        if parts[3:] == ["_search"]:
            return 200, hits(node.groups)
        if parts[3:] == ["_register"]:
            return node.create_group(body, user)
        if method == "PUT":  # TransportUpdateModelGroupAction L271-289
            group = node.groups[parts[3]]
            if group["owner"] not in (None, user.name) and not user.admin:
                return 400, error("Only owner or admin can update access control data.")
            if body.get("backend_roles") and body.get("access_mode") != "restricted":
                return 400, error("You can specify backend roles only for a model group with the restricted access mode.")
            group.update(access=body.get("access_mode", group["access"]), backend_roles=body.get("backend_roles", []))
            return 200, {"status": "Updated"}
        node.groups.pop(parts[3], None)
        return 200, {"result": "deleted"}
    if parts[:3] == ["_plugins", "_ml", "models"]:
        return model_route(node, user, method, parts[3:], body)
    if parts[:2] == ["_search", "pipeline"]:
        if len(parts) == 2:
            return 200, dict(node.pipelines)
        if method == "PUT":
            node.pipelines[parts[2]] = body
            return 200, {"acknowledged": True}
        if method == "DELETE":
            node.pipelines.pop(parts[2], None)
            return 200, {"acknowledged": True}
        return (200, {parts[2]: node.pipelines[parts[2]]}) if parts[2] in node.pipelines else (404, {})
    if parts[:1] in (["_ingest"], ["_index_template"]):
        return 404, {}
    if parts[:1] == ["tsqr_install_lock"]:  # an index: created once (resource_already_exists after)
        if method == "PUT":
            if node.lock is not None:
                return 400, error("index [tsqr_install_lock] already exists (resource_already_exists_exception)")
            node.lock = body["mappings"]["_meta"]
            return 200, {"acknowledged": True}
        if method == "DELETE":
            node.lock = None
            return 200, {"acknowledged": True}
        return (200, {"tsqr_install_lock": {"mappings": {"_meta": node.lock}}}) if node.lock else (404, {})
    return 400, error(f"the fake does not answer {method} {path}")


def model_route(node: FakeNode, user: FakeUser, method: str, parts: list[str], body) -> tuple[int, dict]:
    if parts == ["_search"]:
        return 200, hits(node.models)
    if parts == ["_register"]:
        group_id = body.get("model_group_id")
        if group_id is None:  # TransportRegisterModelAction: the group named after the model, or a new one
            group_id = next((gid for gid, g in node.groups.items() if g["name"] == body["name"]), None)
            if group_id is None:
                _, answer = node.create_group({"name": body["name"], "description": body.get("description")}, user)
                group_id = answer["model_group_id"]
        model_id = node.new_id("model")
        node.models[model_id] = {**body, "model_group_id": group_id, "model_state": "REGISTERED"}
        return 200, {"model_id": model_id, "status": "CREATED"}
    model_id, action = parts[0], (parts[1] if len(parts) > 1 else None)
    model = node.models.get(model_id)
    if model is None:
        return 404, error("Failed to find model")
    if action == "_deploy":
        model["model_state"] = "DEPLOYED"
        return 200, {"task_id": "t", "status": "COMPLETED"}
    if action == "_undeploy":
        model["model_state"] = "UNDEPLOYED"
        return 200, {}
    if action == "_predict":  # TransportPredictionTaskAction.doExecute
        if not node.group_allows(node.groups[model["model_group_id"]], user):
            return 403, error("User Doesn't have privilege to perform this operation on this model")
        node.predictions.append((user.name, model_id))
        match = json.loads(body["parameters"]["match"])
        rewrite = {"original": match["query"], "text": match["query"], "fallback": True}
        answer = {"rewrites": [rewrite], "match": match}
        return 200, {"inference_results": [{"output": [{"name": "response", "dataAsMap": answer}],
                                            "status_code": 200}]}
    if method == "DELETE":
        del node.models[model_id]
        return 200, {"result": "deleted"}
    return 200, model
