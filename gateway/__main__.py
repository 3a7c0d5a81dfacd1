"""`python -m gateway` / `kvmsup-gateway`: run the gateway (gunicorn, or Werkzeug with --dev)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from pydantic import ValidationError

from gateway.auth import TokenError, read_tokens
from gateway.config import Settings

logger = logging.getLogger("gateway")


def _exit_on_term(_sig: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kvmsup-gateway", description=__doc__)
    parser.add_argument(
        "--dev",
        action="store_true",
        help="Werkzeug's threaded server instead of gunicorn (FLASK_DEBUG=1 too)",
    )
    args = parser.parse_args(argv)
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
    if settings.flask_debug:
        logging.getLogger().setLevel(logging.DEBUG)
    if args.dev or settings.flask_debug:
        return _run_dev(settings)
    from gateway.serve import GatewayServer

    GatewayServer(settings).run()
    return 0


def _run_dev(settings: Settings) -> int:
    from gateway import create_app

    signal.signal(signal.SIGTERM, _exit_on_term)
    app = create_app(settings)
    socketio = app.extensions["socketio"]
    logger.info("serving on http://%s:%d (Werkzeug, development)", settings.host, settings.port)
    socketio.run(
        app,
        host=settings.host,
        port=settings.port,
        debug=False,
        use_reloader=False,
        allow_unsafe_werkzeug=True,
        log_output=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
