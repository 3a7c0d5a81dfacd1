"""docker-compose.yml is consistent with the repository (contexts, Dockerfiles, files, commands)
and secure by default: a broker that needs its passwords and ACL, unprivileged read-only
containers, images without build tools. No Docker engine here: the files are read, and
`docker-compose config` resolves them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def dockerfile(service: dict[str, Any]) -> Path:
    build = service["build"]
    return ROOT / str(build["context"]) / str(build.get("dockerfile", "Dockerfile"))


def final_stage(text: str) -> str:
    """The lines of a Dockerfile's last stage: what the image that runs is made of."""
    starts = [m.start() for m in re.finditer(r"^FROM ", text, re.M)]
    return text[starts[-1] :]


def interpolation_default(value: str) -> str:
    """`${VAR:-default}` as Compose resolves it when VAR is unset; other text unchanged."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def mount(volume: str) -> tuple[str, str]:
    """A short-syntax volume's source and target, defaults of `${VAR:-…}` applied."""
    source, target = interpolation_default(volume).split(":")[:2]
    return source, target


def test_services_build_from_existing_files(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"broker", "gateway", "agent"}
    for name, service in compose["services"].items():
        assert (ROOT / service["build"]["context"]).is_dir(), name
        path = dockerfile(service)
        assert path.is_file(), path
        for line in path.read_text().splitlines():
            # COPY --from=<stage> copies between stages, not from the context.
            if line.startswith("COPY ") and "--from=" not in line:
                for src in [w for w in line.split()[1:-1] if not w.startswith("--")]:
                    assert (ROOT / service["build"]["context"] / src).exists(), (name, src)


def test_broker_is_debians_mosquitto_with_our_config(compose: dict[str, Any]) -> None:
    """Every image on one Debian base with Debian's packages: a site with only a Debian mirror
    rebuilds them all (docker/README.md)."""
    text = dockerfile(compose["services"]["broker"]).read_text()
    assert re.search(r"^FROM debian:bookworm-slim$", text, re.M)
    assert re.search(r"apt-get install .*\bmosquitto\b", re.sub(r"\\\n\s*", "", text))
    assert "COPY broker/" in text
    for name in ("gateway", "agent"):
        base = re.findall(r"^FROM (\S+)", dockerfile(compose["services"][name]).read_text(), re.M)
        assert set(base) == {"debian:bookworm-slim"}, (name, base)


def test_commands_are_the_console_scripts(compose: dict[str, Any]) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name in ("gateway", "agent"):
        service = compose["services"][name]
        command = service["command"][0]
        assert command == f"kvmsup-{name}" and command in scripts
        assert f'CMD ["{command}"]' in dockerfile(service).read_text()


def test_volumes_are_named_or_exist(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = mount(volume)[0]
            if volume.startswith("${"):
                # A host directory the operator provisions (docker/README.md): its default is
                # an absolute path outside the checkout, never a place secrets could be built in.
                assert source.startswith("/srv/"), volume
            elif source.startswith((".", "/")):
                # The libvirt socket exists only on a KVM host; everything else must be here.
                if "libvirt" not in source:
                    assert (ROOT / source).exists(), source
            else:
                assert source in named, source


def writable_dirs(text: str) -> tuple[str | None, set[str]]:
    """The user a Dockerfile ends with (`USER`), and the directories its `RUN` lines create
    (`mkdir`) and hand to that user (`chown`) before the `USER` line."""
    logical = re.sub(r"\\\n", " ", text)  # join continuation lines
    user: str | None = None
    created: set[str] = set()
    owned: dict[str, set[str]] = {}
    for line in logical.splitlines():
        words = line.split()
        if words and words[0] == "USER":
            user = words[1].split(":")[0]
        elif words and words[0] == "RUN" and user is None:
            for command in re.split(r"&&|;", line[len("RUN") :]):
                args = [a for a in command.split() if not a.startswith("-")]
                paths = {a.rstrip("/") for a in args[1:] if a.startswith("/")}
                if args and args[0] == "mkdir":
                    created |= paths
                elif args and args[0] == "chown" and len(args) > 1:
                    owned.setdefault(args[1].split(":")[0], set()).update(paths)
    return user, created & owned.get(user or "", set())


def test_writable_dirs_helper_reads_mkdir_and_chown() -> None:
    text = (
        "FROM x\nRUN useradd u \\\n    && mkdir -p /data /cache \\\n"
        "    && chown u:u /data\nUSER u\nRUN mkdir /late && chown u /late\n"
    )
    assert writable_dirs(text) == ("u", {"/data"})
    assert writable_dirs("FROM x\nRUN mkdir /data\n") == (None, set())


def test_named_volumes_of_non_root_images_are_created_and_owned_by_their_user(
    compose: dict[str, Any],
) -> None:
    """Docker fills a new named volume from the image's directory, owner included; without that
    directory the volume mounts root-owned and a `USER` image cannot write to it (a gateway
    whose KVMSUP_DB is there refuses to start). No Docker engine here: read the Dockerfile."""
    named = set(compose.get("volumes") or {})
    checked = 0
    for name, service in compose["services"].items():
        user, ready = writable_dirs(dockerfile(service).read_text())
        if user in (None, "root", "0"):
            continue
        for volume in service.get("volumes", []):
            source, target = mount(volume)
            if source in named:
                checked += 1
                assert target.rstrip("/") in ready, (name, target, user)
    assert checked  # the gateway's data volume is among them


# -- secure by default --------------------------------------------------------------------------

ENTRYPOINT = ROOT / "docker" / "broker-entrypoint.sh"


def image_user(service: dict[str, Any]) -> str | None:
    """Who the service's processes run as: compose's `user:`, else the image's last `USER`."""
    if "user" in service:
        return str(service["user"]).split(":")[0]
    return writable_dirs(dockerfile(service).read_text())[0]


@pytest.mark.parametrize("name", ["broker", "gateway", "agent"])
def test_every_service_runs_unprivileged_on_a_read_only_root(
    compose: dict[str, Any], name: str
) -> None:
    """A process that is taken over can neither rewrite its image, nor use a capability, nor
    gain one through a setuid binary; and it is not root to begin with."""
    service = compose["services"][name]
    assert service.get("read_only") is True
    assert service.get("cap_drop") == ["ALL"]
    assert "no-new-privileges:true" in service.get("security_opt", [])
    assert image_user(service) not in (None, "root", "0")
    # And the image alone (docker run without compose) is not root either.
    final_user = writable_dirs(final_stage(dockerfile(service).read_text()))[0]
    assert final_user not in (None, "root", "0"), name


def test_agent_image_leaves_its_build_tools_in_the_build_stage(compose: dict[str, Any]) -> None:
    text = dockerfile(compose["services"]["agent"]).read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    build, final = text[: text.index(final_stage(text))], final_stage(text)
    for tool in ("gcc", "pkg-config", "libvirt-dev"):
        assert tool in build
        assert not re.search(rf"\b{re.escape(tool)}\b", final), tool
    assert "COPY --from=" in final  # the virtualenv comes from the build stage
    assert "libvirt0" in final  # the one library libvirt-python needs at run time


def test_agent_reaches_libvirt_through_the_hosts_libvirt_group(compose: dict[str, Any]) -> None:
    """Non-root, the agent opens the socket only as a member of its group, whose id is the
    host's: the operator says which, and the image has no group by that name to fall back on."""
    agent = compose["services"]["agent"]
    assert agent["group_add"] == ["${KVMSUP_LIBVIRT_GID:-libvirt}"]
    assert any(mount(v)[1] == "/var/run/libvirt/libvirt-sock" for v in agent["volumes"])
    assert "groupadd" not in dockerfile(agent).read_text()


def test_gateway_is_published_on_loopback_only_by_default(compose: dict[str, Any]) -> None:
    """Bearer tokens in clear text stay on this machine unless the operator says otherwise;
    a TLS proxy in front carries them over the network (docs/TLS.md)."""
    ports = [interpolation_default(p) for p in compose["services"]["gateway"]["ports"]]
    assert ports == ["127.0.0.1:5000:5000"]
    assert (ROOT / "docs" / "TLS.md").is_file()


def test_broker_defaults_to_the_production_config(compose: dict[str, Any]) -> None:
    broker = compose["services"]["broker"]
    assert interpolation_default(broker["environment"]["KVMSUP_BROKER_MODE"]) == "production"
    text = dockerfile(broker).read_text()
    assert "ENV KVMSUP_BROKER_MODE=production" in text
    assert 'CMD ["kvmsup-broker"]' in text
    assert "COPY docker/broker-entrypoint.sh /usr/local/bin/kvmsup-broker" in text
    assert "/mosquitto/secrets" in [mount(v)[1] for v in broker["volumes"]]
    assert any(mount(v)[1] == "/mosquitto/data" for v in broker["volumes"])
    # Only MQTT over TLS is published; the dev mode's plain port stays on the compose network.
    assert [interpolation_default(p) for p in broker["ports"]] == ["0.0.0.0:8883:8883"]


def test_broker_start_script_checks_every_secret_the_production_config_reads() -> None:
    conf = (ROOT / "broker" / "mosquitto.conf").read_text()
    assert re.search(r"^allow_anonymous false$", conf, re.M)
    assert re.search(r"^password_file /mosquitto/secrets/passwd$", conf, re.M)
    assert re.search(r"^acl_file /mosquitto/secrets/acl$", conf, re.M)
    script = ENTRYPOINT.read_text()
    checked = set(re.search(r"for file in ([^;]+);", script).group(1).split())  # type: ignore[union-attr]
    assert set(re.findall(r"/mosquitto/secrets/(\S+)", conf)) == checked
    assert "exec mosquitto -c /mosquitto/config/kvmsup/mosquitto.conf" in script
