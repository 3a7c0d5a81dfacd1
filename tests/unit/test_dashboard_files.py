"""The dashboard's files as the gateway serves them: types, CSP, no other origin, `/whoami`."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from gateway.web.dashboard import CSP, UI_DIR

pytestmark = pytest.mark.unit

VIEWER = {"Authorization": "Bearer viewer-secret"}
OPERATOR = {"Authorization": "Bearer operator-secret"}


@pytest.fixture
def client(make_app: Callable[..., Flask]) -> FlaskClient:
    return make_app(started=False).test_client()


def test_the_page_is_served_at_ui_with_a_strict_csp_and_root_stays_json(client):
    page = client.get("/ui")
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = page.headers["Content-Security-Policy"]
    assert csp == CSP
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"  # no inline script, no other origin
    assert directives["style-src"] == "'self'"
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert b'<script type="module" src="/ui/app.js">' in page.data
    assert b'<link rel="icon" href="data:,">' in page.data  # no favicon request
    assert client.get("/").is_json  # the seed's index is untouched


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/vendor/socket.io-client/socket.io.esm.min.js", "text/javascript; charset=utf-8"),
        ("/ui/vendor/uplot/uPlot.esm.js", "text/javascript; charset=utf-8"),
        ("/ui/vendor/uplot/uPlot.min.css", "text/css; charset=utf-8"),
        ("/ui/vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
    ],
)
def test_assets_have_their_type_stated(client, path, content_type):
    resp = client.get(path)
    assert resp.status_code == 200, path
    assert resp.headers["Content-Type"] == content_type
    assert resp.headers["Content-Security-Policy"] == CSP
    assert resp.headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize(
    "path",
    [
        "/ui/nope.js",
        "/ui/../__init__.py",
        "/ui/%2e%2e/__init__.py",
        "/ui/..%2f__init__.py",
        "/ui//etc/passwd",
        "/ui/vendor",
        "/ui/app.py",
    ],
)
def test_nothing_outside_the_ui_files_is_served(client, path):
    # Werkzeug first redirects a doubled slash to the single-slash path, which then is a 404.
    resp = client.get(path, follow_redirects=True)
    assert resp.status_code == 404, (path, resp.data[:200])
    assert resp.get_json()["error"]["code"] == "not_found"


def test_every_asset_comes_from_the_gateway_itself():
    """No CDN: every URL in the page, its style sheet and its modules is on this server."""
    texts = {p: p.read_text() for p in UI_DIR.glob("*") if p.suffix in {".html", ".js", ".css"}}
    assert texts
    for path, text in texts.items():
        for url in re.findall(r"""(?:src|href)=["']([^"']+)["']""", text):
            assert url.startswith(("/ui/", "#")) or url == "data:,", (path.name, url)
        for spec in re.findall(r"""from\s+["']([^"']+)["']""", text):
            assert spec.startswith("./"), (path.name, spec)
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text, path.name
        assert "style=" not in text, path.name  # inline styles would be refused by the CSP
        assert not re.search(r"\son[a-z]+=", text), path.name  # nor inline handlers


def test_vendored_files_match_their_pinned_checksums():
    """What `scripts/vendor-ui.sh --check` checks, offline: the files are the pinned releases."""
    vendor = UI_DIR / "vendor"
    listed = {}
    for line in (vendor / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name] = digest
    assert {"socket.io-client/LICENSE", "uplot/LICENSE"} <= set(listed)
    for name, digest in listed.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    on_disk = {
        str(p.relative_to(vendor))
        for p in vendor.rglob("*")
        if p.is_file() and p.name not in {"SHA256SUMS", "README.md"}
    }
    assert on_disk == set(listed)


@pytest.mark.parametrize(
    ("headers", "role", "name"), [(VIEWER, "viewer", "v"), (OPERATOR, "operator", "o")]
)
def test_whoami_tells_the_page_its_role(client, headers, role, name):
    resp = client.get("/whoami", headers=headers)
    assert resp.status_code == 200
    assert resp.get_json() == {"name": name, "role": role, "auth": "bearer"}


def test_whoami_needs_a_token(client):
    assert client.get("/whoami").status_code == 401
    assert client.get("/whoami", headers={"Authorization": "Bearer wrong-token"}).status_code == 401


def test_whoami_with_auth_off_is_an_anonymous_operator(make_app):
    resp = make_app(started=False, auth="none").test_client().get("/whoami")
    assert resp.get_json() == {"name": "anonymous", "role": "operator", "auth": "none"}


def test_the_openapi_document_lists_every_dashboard_file(client):
    doc = client.get("/openapi.json").get_json()
    (param,) = doc["paths"]["/ui/{asset}"]["get"]["parameters"]
    names = param["schema"]["enum"]
    assert "app.js" in names and "vendor/uplot/LICENSE" in names
    for name in names:
        assert client.get(f"/ui/{name}").status_code == 200, name
    assert doc["paths"]["/whoami"]["get"]["x-required-role"] == "viewer"
    assert (
        "security" not in doc["paths"]["/ui"]["get"] or not doc["paths"]["/ui"]["get"]["security"]
    )


def test_package_data_ships_the_ui_files():
    """A non-editable install ships what setuptools' package-data lists: every UI file."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text())
    globs = data["tool"]["setuptools"]["package-data"]["gateway"]
    gateway_dir = UI_DIR.parent
    shipped = {p for g in globs for p in gateway_dir.glob(g) if p.is_file()}
    wanted = {p for p in UI_DIR.rglob("*") if p.is_file()}
    assert wanted <= shipped, sorted(str(p) for p in wanted - shipped)
