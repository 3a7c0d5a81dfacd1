"""`GET /openapi.json`: every Flask route documented and nothing else, refs resolve, roles."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from gateway.web.openapi import ROUTES, openapi_path

pytestmark = pytest.mark.unit


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(started=False)


def flask_routes(app: Flask) -> set[tuple[str, str]]:
    return {
        (openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_every_route_is_documented_and_nothing_else(app: Flask) -> None:
    resp = app.test_client().get("/openapi.json")  # public, like `/`
    assert resp.status_code == 200
    doc = resp.get_json()
    assert doc["openapi"].startswith("3.1")
    documented = {(p, m) for p, item in doc["paths"].items() for m in item}
    assert documented == flask_routes(app)
    endpoints = {r.endpoint for r in app.url_map.iter_rules() if r.endpoint != "static"}
    assert endpoints == set(ROUTES)  # no stale table entry either


def test_refs_resolve_and_ids_are_unique(app: Flask) -> None:
    doc = app.test_client().get("/openapi.json").get_json()
    for target in refs(doc):
        node: Any = doc
        assert target.startswith("#/"), target
        for part in target[2:].split("/"):
            assert part in node, target
            node = node[part]
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    for path, item in doc["paths"].items():
        for op in item.values():
            path_params = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert path_params == set(re.findall(r"{(\w+)}", path)), path
            assert all(p["schema"] for p in op["parameters"])


def test_roles_bodies_and_parameters(app: Flask) -> None:
    doc = app.test_client().get("/openapi.json").get_json()
    paths = doc["paths"]
    assert doc["components"]["securitySchemes"]["bearer"] == {
        **doc["components"]["securitySchemes"]["bearer"],
        "type": "http",
        "scheme": "bearer",
    }
    for public in ("/", "/health", "/openapi.json"):
        assert paths[public]["get"]["security"] == []
    assert paths["/vms"]["get"]["x-required-role"] == "viewer"
    assert paths["/metrics"]["get"]["x-required-role"] == "viewer"
    stop = paths["/vm/{name}/stop"]["post"]
    assert stop["x-required-role"] == "operator"
    assert {p["name"] for p in stop["parameters"]} == {"name", "host", "wait"}
    assert {"200", "202", "401", "403", "503", "504"} <= set(stop["responses"])
    body = doc["components"]["schemas"]["StopBody"]["properties"]
    assert set(body) == {"force", "timeout_s", "force_after"}
    assert set(doc["components"]["schemas"]["RestartBody"]["properties"]) == {"force"}
    history = paths["/vm/{name}/history"]["get"]
    assert {p["name"] for p in history["parameters"]} == {"name", "host", "minutes", "points"}
    error = doc["components"]["schemas"]["Error"]["properties"]["error"]
    assert set(error["required"]) == {"code", "message"}
    assert "text/plain; version=0.0.4" in paths["/metrics"]["get"]["responses"]["200"]["content"]


def test_flask_paths_become_openapi_paths() -> None:
    assert openapi_path("/vm/<name>/stop") == "/vm/{name}/stop"
    assert openapi_path("/jobs/<string:job_id>") == "/jobs/{job_id}"


def test_parameter_maxima_follow_the_settings(make_app: Callable[..., Flask]) -> None:
    """What the server refuses with a 400 is what the document says it accepts, no more."""
    app = make_app(
        started=False, max_wait=30, history_minutes=90, history_1m_hours=1, history_15m_days=0
    )
    client = app.test_client()
    paths = client.get("/openapi.json").get_json()["paths"]
    wait = next(p for p in paths["/vm/{name}/stop"]["post"]["parameters"] if p["name"] == "wait")
    minutes = next(
        p for p in paths["/vm/{name}/history"]["get"]["parameters"] if p["name"] == "minutes"
    )
    assert wait["schema"]["maximum"] == 30
    assert minutes["schema"]["maximum"] == 90  # the longest window kept: every tick here
    headers = {"Authorization": "Bearer operator-secret"}
    refused = client.post("/vm/web-01/stop?wait=30.5", headers=headers)
    assert refused.status_code == 400, refused.get_json()


def test_the_servers_own_414_is_documented_as_html(app: Flask) -> None:
    doc = app.test_client().get("/openapi.json").get_json()
    for item in doc["paths"].values():
        for op in item.values():
            assert op["responses"]["414"] == {"$ref": "#/components/responses/E414"}
    assert "text/html" in doc["components"]["responses"]["E414"]["content"]


def test_links_name_real_operations_and_their_parameters(app: Flask) -> None:
    """A stateful client follows these from a list (or a command) to the next request."""
    doc = app.test_client().get("/openapi.json").get_json()
    ops = {op["operationId"]: op for item in doc["paths"].values() for op in item.values()}
    links = [
        link
        for op in ops.values()
        for answer in op["responses"].values()
        for link in answer.get("links", {}).values()
    ]
    assert len(links) >= 8
    for link in links:
        target = ops[link["operationId"]]
        names = {p["name"] for p in target["parameters"]}
        assert set(link["parameters"]) <= names, link
    assert ops["vm_stop"]["responses"]["202"]["links"]["job"]["operationId"] == "job"


def test_a_405_names_the_allowed_methods(app: Flask) -> None:
    resp = app.test_client().open("/vms", method="TRACE")
    assert resp.status_code == 405
    assert "GET" in resp.headers["Allow"]
    assert resp.get_json()["error"]["code"] == "method_not_allowed"


def test_null_command_bodies_are_documented(app: Flask) -> None:
    doc = app.test_client().get("/openapi.json").get_json()
    body = doc["paths"]["/vm/{name}/start"]["post"]["requestBody"]
    assert {"type": "null"} in body["content"]["application/json"]["schema"]["anyOf"]


def test_a_repeated_query_parameter_is_refused(app: Flask) -> None:
    headers = {"Authorization": "Bearer operator-secret"}
    resp = app.test_client().post("/vm/web-01/start?wait=1&wait=500", headers=headers)
    assert resp.status_code == 400
    assert "wait" in resp.get_json()["error"]["message"]
    resp = app.test_client().get("/jobs?limit=5&limit=6", headers=headers)
    assert resp.status_code == 400


def test_force_after_must_be_a_boolean(app: Flask) -> None:
    headers = {"Authorization": "Bearer operator-secret"}
    resp = app.test_client().post("/vm/web-01/stop", headers=headers, json={"force_after": 0})
    assert resp.status_code == 400, resp.get_json()
    assert "force_after" in resp.get_json()["error"]["message"]
