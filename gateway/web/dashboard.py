"""The operator dashboard at `/ui`: its files, served by the gateway itself, and `GET /whoami`."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, Response, g, jsonify, send_from_directory
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import NotFound as WerkzeugNotFound
from werkzeug.security import safe_join

from gateway.current import service
from gateway.errors import NotFound
from gateway.web.roles import require

UI_DIR = Path(__file__).resolve().parent.parent / "ui"

# Only these kinds of file are served, each with its type stated rather than guessed from the
# platform's mimetypes table (which names JavaScript differently from one Python to the next,
# and a module script with a wrong type is refused by the browser).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    "": "text/plain; charset=utf-8",  # the vendored LICENSE and SHA256SUMS files
}

# Everything comes from the gateway itself: no inline script or style, no other origin, no
# framing. `connect-src 'self'` covers the REST calls and the Socket.IO websocket (same host).
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

bp = Blueprint("dashboard", __name__)


def files() -> list[str]:
    """Every file `GET /ui/<file>` serves, by its path under /ui/ (for the OpenAPI document)."""
    return sorted(
        str(p.relative_to(UI_DIR))
        for p in UI_DIR.rglob("*")
        if p.is_file() and p.suffix.lower() in CONTENT_TYPES
    )


def _serve(relative: str) -> Response:
    path = safe_join(str(UI_DIR), relative)
    if path is None or not Path(path).is_file():
        raise NotFound(f"no dashboard file {relative!r}")
    content_type = CONTENT_TYPES.get(Path(path).suffix.lower())
    if content_type is None:
        raise NotFound(f"no dashboard file {relative!r}")
    try:
        # Revalidated each time (ETag / Last-Modified): an upgraded gateway's page never runs
        # with a cached module of the version before.
        resp = send_from_directory(UI_DIR, relative, mimetype=content_type, max_age=0)
    except WerkzeugNotFound as exc:
        raise NotFound(f"no dashboard file {relative!r}") from exc
    resp.headers["Content-Type"] = content_type
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp


@bp.get("/ui")
def page() -> ResponseReturnValue:
    """Open, like `/`: the page holds no fleet data; it asks for a token and reads the API."""
    return _serve("index.html")


@bp.get("/ui/<path:asset>")
def asset(asset: str) -> ResponseReturnValue:
    return _serve(asset)


@bp.get("/whoami")
@require("viewer")
def whoami() -> ResponseReturnValue:
    """The caller's token name and role, so a client shows only the actions it may take."""
    auth = "none" if service().auth.open else "bearer"
    return jsonify({"name": g.principal.name, "role": g.principal.role, "auth": auth})


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
