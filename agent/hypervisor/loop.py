"""libvirt's default event loop: registered once per process and run in its own daemon thread.

The loop must be registered and running before `libvirt.open()`, or events arrive
only as a side effect of other calls and keepalive cannot work.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import libvirt

logger = logging.getLogger(__name__)

_event_loop_lock = threading.Lock()
_event_loop_started = False


def _ignore_libvirt_error(_ctx: Any, _err: Any) -> None:
    """libvirt prints every error to stderr by default; ours are raised and logged instead."""


def start_event_loop() -> None:
    """Registers libvirt's default event loop and runs it in a daemon thread, once per process."""
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.registerErrorHandler(_ignore_libvirt_error, None)
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:
                    logger.exception("libvirt event loop iteration failed")
                    time.sleep(0.1)

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True
