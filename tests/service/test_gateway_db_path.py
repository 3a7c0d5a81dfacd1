"""KVMSUP_DB as the operator meets it: the file is made when the gateway starts (building the
app makes nothing), and a path it cannot use stops the gateway with a message naming it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.gateway import GatewayProc, wait_until

pytestmark = pytest.mark.service

DEAD_BROKER = "mqtt://127.0.0.1:9"  # the database is opened whether or not MQTT is reachable


@pytest.mark.parametrize("dev", [False, True], ids=["gunicorn", "dev"])
def test_an_unusable_db_path_stops_the_gateway_with_a_clear_message(
    tmp_path: Path, dev: bool
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    bad = blocker / "sub" / "gateway.db"
    gw = GatewayProc(tmp_path, DEAD_BROKER, dev=dev, KVMSUP_DB=str(bad))
    gw.service.start()
    assert gw.service.proc is not None
    try:
        code = gw.service.proc.wait(timeout=120)  # generous: the machine may be busy
    except subprocess.TimeoutExpired:
        gw.stop()
        pytest.fail(f"the gateway kept running on an unusable KVMSUP_DB:\n{gw.service.tail()}")
    out = gw.service.output()
    assert code != 0, out[-3000:]
    assert f"cannot open the database {str(bad)!r}" in out, out[-3000:]
    assert "Not a directory" in out, out[-3000:]
    assert blocker.read_text() == ""  # nothing written where it could not go


def test_the_db_and_its_directory_are_made_when_the_gateway_starts(tmp_path: Path) -> None:
    db = tmp_path / "data" / "nested" / "gateway.db"
    gw = GatewayProc(tmp_path, DEAD_BROKER, KVMSUP_DB=str(db)).start()
    try:
        # gunicorn listens before its worker builds and starts the app: poll for the worker.
        assert wait_until(lambda: gw.get("/jobs").status_code == 200, 60)  # the audit reads
        assert db.is_file()
    finally:
        gw.stop()
    assert "Traceback" not in gw.service.output(), gw.service.tail()
