"""Every container as docker-compose.yml promises, read from the running stack (`docker inspect`,
`docker exec`): not root, a read-only root file system, no capability, `no-new-privileges`; the
gateway published on loopback only."""

from __future__ import annotations

import ipaddress

import pytest

from tests.support.containers import Stack

pytestmark = [pytest.mark.container, pytest.mark.timeout(2400)]

SERVICES = ("broker", "gateway", "agent")
UIDS = {"broker": "1883", "gateway": "10002", "agent": "10001"}


@pytest.mark.parametrize("service", SERVICES)
def test_every_container_is_locked_down(dev_stack: Stack, service: str) -> None:
    info = dev_stack.inspect(service)
    host = info["HostConfig"]
    assert info["State"]["Running"] is True, dev_stack.logs(service)
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Privileged"] is False
    # What the processes really are, from inside.
    ids = dev_stack.exec(service, "id").split()
    assert ids[0].startswith(f"uid={UIDS[service]}("), ids
    assert "uid=0(" not in " ".join(ids) and "gid=0(" not in ids[1]
    status = dev_stack.exec(service, "cat", "/proc/1/status")
    caps = dict(line.split(":\t") for line in status.splitlines() if line.startswith("Cap"))
    assert int(caps["CapEff"], 16) == 0 and int(caps["CapBnd"], 16) == 0, caps
    assert status.split("NoNewPrivs:\t")[1][0] == "1"
    probe = dev_stack.compose("exec", "-T", service, "touch", "/opt-write-probe", check=False)
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr + probe.stdout


def test_only_loopback_and_the_brokers_tls_port_are_published(dev_stack: Stack) -> None:
    gateway = dev_stack.inspect("gateway")["HostConfig"]["PortBindings"]
    assert list(gateway) == ["5000/tcp"]
    for binding in gateway["5000/tcp"]:
        assert ipaddress.ip_address(binding["HostIp"]).is_loopback, binding
    broker = dev_stack.inspect("broker")["HostConfig"]["PortBindings"]
    assert list(broker) == ["8883/tcp"]  # dev mode's plain 1883 stays on the compose network
    assert not dev_stack.inspect("agent")["HostConfig"]["PortBindings"]
