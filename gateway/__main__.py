"""`python -m gateway` / `kvmsup-gateway`: run the gateway (gunicorn, or Werkzeug with --dev)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Settings

logger = logging.getLogger("gateway")

# How pydantic reads a true boolean from the environment (FLASK_DEBUG is read again, and
# validated, by Settings once the process is patched).
TRUE_WORDS = frozenset({"1", "on", "t", "true", "y", "yes"})


def _exit_on_term(_sig: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def _patch_for_gevent() -> None:
    """Make socket, ssl, threading, select, time.sleep… cooperative, before anything that
    uses them is imported: paho imports ssl and keeps its own network thread, and a module
    that copied an unpatched name would block the whole worker. Done in gunicorn's master, so
    the worker it forks starts patched too (gunicorn's gevent worker patches again, a no-op)."""
    from gevent import monkey

    monkey.patch_all()


class _Version(argparse.Action):
    """`--version`, read from the installed package's metadata only when asked for: the
    metadata readers import threading, and nothing may before gevent patches it."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help=str(kwargs.get("help", "")))

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("kvmsup")
        except PackageNotFoundError:
            found = "unknown (not installed as a package)"
        print(f"{parser.prog} {found}")  # stdout, as argparse's own version action does
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kvmsup-gateway", description=__doc__)
    parser.add_argument(
        "--dev",
        action="store_true",
        help="Werkzeug's threaded server instead of gunicorn (FLASK_DEBUG=1 too)",
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    args = parser.parse_args(argv)
    dev = args.dev or os.environ.get("FLASK_DEBUG", "").strip().lower() in TRUE_WORDS
    if not dev:
        _patch_for_gevent()
    # Only now: pydantic, Flask and the gateway's modules import ssl and threading users.
    from pydantic import ValidationError

    from gateway.auth import TokenError, read_tokens
    from gateway.config import Settings

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings()
    except ValidationError as exc:
        for err in exc.errors():
            logger.error("bad setting %s: %s", ".".join(map(str, err["loc"])), err["msg"])
        return 2
    try:
        # Checked here, before gunicorn forks its worker, so a bad list is one clear line and
        # exit 2 rather than a worker's traceback. The message never quotes an entry's fields.
        read_tokens(settings)
    except (TokenError, OSError) as exc:
        logger.error("bad setting KVMSUP_API_TOKENS(_FILE): %s", exc)
        return 2
    if settings.threads is not None:
        logger.warning(
            "KVMSUP_THREADS is ignored: the gateway serves every connection from one gevent "
            "worker now; KVMSUP_MAX_SOCKETS bounds the Socket.IO clients"
        )
    if settings.flask_debug:
        logging.getLogger().setLevel(logging.DEBUG)
    if dev:
        return _run_dev(settings)
    from gateway.serve import GatewayServer

    GatewayServer(settings).run()
    return 0


def _run_dev(settings: Settings) -> int:
    from gateway import create_app, start
    from gateway.realtime.events import socketio

    signal.signal(signal.SIGTERM, _exit_on_term)
    app = create_app(settings)
    start(app)
    logger.info("serving on http://%s:%d (Werkzeug, development)", settings.host, settings.port)
    socketio.run(
        app,
        host=settings.host,
        port=settings.port,
        debug=False,
        use_reloader=False,
        # Flask's `run` reads FLASK_DEBUG again and would start Werkzeug's interactive
        # debugger, which runs Python sent by any client that gets past its PIN. Never.
        use_debugger=False,
        use_evalex=False,
        load_dotenv=False,
        allow_unsafe_werkzeug=True,
        log_output=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
