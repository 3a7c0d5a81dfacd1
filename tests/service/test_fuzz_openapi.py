"""The fuzz tier (issue 8): schemathesis against the live `/openapi.json` of a gateway fed by two
test-driver agents, positive and negative data, with its stateful phase where the document links
operations. Zero 5xx, zero responses that the document does not describe.

The run is schemathesis' own CLI (`st run`), so the summary printed here is the tool's: how many
examples it tried per phase and how many failures it found. Bounded by `--max-examples` and
`--max-time` so it fits CI on a busy two-core machine. Command routes act on the test-driver VMs
for real; that is why it runs on test-driver agents.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.service.conftest import wait_ready
from tests.support.gateway import GatewayProc
from tests.support.procs import Service

pytestmark = [pytest.mark.service, pytest.mark.fuzz, pytest.mark.timeout(420)]

# No 5xx, every answer as documented (status, media type, body, headers), an undocumented
# method gets a 405 with Allow, and a route that needs a token does not answer without one.
# Not `negative_data_rejection` by default: some of its negatives cannot be told apart on the
# wire (an object `?wait=` goes out as an empty `?wait=`, which means "the default"), and it
# counts the HTTP server's own 414 as acceptance. Its real findings were fixed (force_after: 0,
# repeated parameters); KVMSUP_FUZZ_CHECKS=all runs it.
CHECKS = os.environ.get(
    "KVMSUP_FUZZ_CHECKS",
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance,"
    "unsupported_method,missing_required_header,ignored_auth",
)
MAX_EXAMPLES = int(os.environ.get("KVMSUP_FUZZ_EXAMPLES", "15"))
MAX_TIME_S = int(os.environ.get("KVMSUP_FUZZ_SECONDS", "100"))


def _st() -> str:
    st = Path(sys.executable).with_name("st")
    if not st.exists():
        pytest.fail("schemathesis is not installed: `make install` installs the dev extra")
    return str(st)


def test_schemathesis_finds_no_5xx_and_no_undocumented_response(
    demo_agents: dict[str, Service],
    start_gateway: Callable[..., GatewayProc],
    tmp_path: Path,
) -> None:
    # The fuzzer sends wrong and missing tokens on purpose; throttled, it would see little but
    # 429s. The throttle has tests of its own (test_rest_auth_attacks.py).
    gw = start_gateway(KVMSUP_AUTH_FAIL_BURST="10000", KVMSUP_AUTH_FAIL_PER_MINUTE="60000")
    wait_ready(gw)
    args = [
        _st(),
        "--no-color",
        "run",
        f"{gw.url}/openapi.json",
        "--checks",
        CHECKS,
        "--mode",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--max-time",
        str(MAX_TIME_S),
        # One worker: hypothesis describes its filters by parsing source, and CPython 3.11's
        # parser is not safe to run from two threads at once (a spurious SystemError).
        "--workers",
        "1",
        "--seed",
        os.environ.get("KVMSUP_FUZZ_SEED", "8"),
        "--request-timeout",
        "40",
        "--suppress-health-check",
        "all",
        "--generation-database",
        "none",
        "-H",
        f"Authorization: Bearer {gw.tokens.operator}",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "schemathesis"),
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "COLUMNS": "120"}
    run = subprocess.run(
        args, capture_output=True, text=True, timeout=MAX_TIME_S + 200, env=env, cwd=tmp_path
    )
    out = run.stdout + run.stderr
    # The tool's own summary goes to the pytest output (`-s`, or the report on failure).
    print(out)
    summary = out[out.rfind("SUMMARY") :] if "SUMMARY" in out else out[-3000:]
    assert run.returncode == 0, f"schemathesis found failures (exit {run.returncode}):\n{out}"
    assert re.search(r"No issues found", summary), summary
    tried = re.search(r"(\d+) generated", summary)
    assert tried and int(tried.group(1)) > 0, summary
    assert "Traceback" not in gw.service.output(), gw.service.output()[-3000:]
