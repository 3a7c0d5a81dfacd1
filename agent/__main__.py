"""`kvmsup-agent` / `python -m agent`: read the settings, run the service until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from pydantic import ValidationError

from agent import __version__
from agent.config import AgentSettings
from agent.service import AgentService
from shared.redact import ScrubFilter

logger = logging.getLogger("agent")


def _log_thread_crash(args: threading.ExceptHookArgs) -> None:
    logger.critical(
        "THREAD CRASHED: %s",
        args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
    )


def cli(argv: list[str] | None = None) -> int:
    """The console script: `--version` and `--help`; every setting comes from the environment."""
    parser = argparse.ArgumentParser(
        prog="kvmsup-agent",
        description="Watch this host's libvirt VMs and publish them to MQTT; settings from "
        "KVMSUP_* and LIBVIRT_URI in the environment (docs/SPEC.md §8).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.parse_args(argv)
    return main()


def main() -> int:
    # Configured before the settings are read so a bad one is a log line like any other; the
    # level comes from them just after.
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s",
    )
    try:
        settings = AgentSettings()
    except ValidationError as exc:
        # Each error's message only: pydantic's full text may repeat the input, which for
        # KVMSUP_MQTT_URL or LIBVIRT_URI may hold a password (SPEC §7).
        for err in exc.errors():
            where = ".".join(str(part) for part in err["loc"]) or "settings"
            logger.error("bad setting %s: %s", where, err["msg"])
        return 2
    logging.getLogger().setLevel(settings.log_level)
    # Whatever a log line quotes (libvirt's errors quote the URI), the URI's secrets stay out.
    for handler in logging.getLogger().handlers:
        handler.addFilter(ScrubFilter(settings.libvirt_redacted))
    threading.excepthook = _log_thread_crash
    service = AgentService(settings)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %d received", signum)
        service.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.start()
    while not service.wait(1.0):
        pass
    service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(cli())
