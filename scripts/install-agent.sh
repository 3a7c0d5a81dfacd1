#!/bin/sh
# Installs the KVM Supervisor agent (and, with --gateway, the gateway) as a systemd service on a
# host, without containers:
#   - a system user and group `kvmsup`, member of the host's `libvirt` group (agent);
#   - a virtualenv in /opt/kvmsup with `kvmsup[agent]` (`[agent,gateway]`) from the given wheel,
#     sdist or checkout (default: the checkout this script is in);
#   - deploy/kvmsup-agent.service (and kvmsup-gateway.service) in /etc/systemd/system;
#   - /etc/kvmsup/agent.env (gateway.env) from deploy/*.env.example, mode 0600, never
#     overwritten: fill it in, then `systemctl enable --now kvmsup-agent`.
# Run again with a newer package to upgrade: the venv is upgraded in place and running services
# restarted. Needs python3 with venv (Debian: python3-venv); building libvirt-python needs gcc,
# pkg-config, libvirt-dev and python3-dev.
#
# Usage: scripts/install-agent.sh [--gateway] [--source WHEEL|SDIST|DIR] [--prefix /opt/kvmsup]
#                                 [--root DESTDIR]
# --root installs into a staging tree (users into DESTDIR/etc/passwd, nothing started): for
# packaging and for the tests.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
source="$here"
prefix=/opt/kvmsup
root=""
extras=agent
units=kvmsup-agent

while [ $# -gt 0 ]; do
    case "$1" in
        --gateway) extras=agent,gateway; units="kvmsup-agent kvmsup-gateway" ;;
        --source) source=$2; shift ;;
        --prefix) prefix=$2; shift ;;
        --root) root=$(cd "$2" && pwd); shift ;;
        -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-agent.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
    esac
    shift
done

if [ "$(id -u)" != 0 ] && [ -z "$root" ]; then
    echo "install-agent.sh: run as root (it adds a user and a systemd unit)" >&2
    exit 77
fi

say() { echo "install-agent.sh: $*"; }
# useradd/groupadd act on DESTDIR/etc/{passwd,group} with --prefix, on the host's without.
users() { if [ -n "$root" ]; then "$@" --prefix "$root"; else "$@"; fi; }
has_group() { grep -q "^$1:" "$root/etc/group"; }

# 1. The service user: no login, no home, its own group; the agent's extra group is the one
#    libvirtd gives its socket to (and libvirt's polkit rule admits).
if ! grep -q '^kvmsup:' "$root/etc/passwd"; then
    users useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin kvmsup
    say "added user kvmsup"
fi
if has_group libvirt; then
    # In the group's member list too, not only the unit's SupplementaryGroups: polkit reads
    # group membership from the user database.
    users usermod --append --groups libvirt kvmsup
else
    say "WARNING: no group 'libvirt' on this host: install libvirt-daemon-system, or the agent's"
    say "  unit (SupplementaryGroups=libvirt) will not start (deploy/README.md)"
fi

# 2. The virtualenv, owned by root: the service only reads it. pip upgrades in place.
[ -x "$root$prefix/bin/python" ] || python3 -m venv "$root$prefix"
case "$source" in
    *.whl|*.tar.gz) spec="$source[$extras]" ;;
    *) spec="$(cd "$source" && pwd)[$extras]" ;;
esac
"$root$prefix/bin/pip" install --quiet --upgrade "$spec"
say "installed $("$root$prefix/bin/kvmsup-agent" --version) in $prefix"

# 3. Units (ExecStart follows --prefix) and env files (0600, root's: systemd reads them, the
#    service does not need to).
install -d -m 0755 "$root/etc/systemd/system"
install -d -m 0750 "$root/etc/kvmsup"
for unit in $units; do
    sed "s|/opt/kvmsup/bin/|$prefix/bin/|" "$here/deploy/$unit.service" \
        > "$root/etc/systemd/system/$unit.service"
    chmod 0644 "$root/etc/systemd/system/$unit.service"
    env="$root/etc/kvmsup/${unit#kvmsup-}.env"
    if [ ! -e "$env" ]; then
        install -m 0600 "$here/deploy/${unit#kvmsup-}.env.example" "$env"
        say "wrote ${env#"$root"}: fill it in (mode 0600)"
    fi
done

# 4. systemd: only on the live system, and only where systemd runs.
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    for unit in $units; do
        # An upgrade restarts what runs; a first install waits for the env file.
        systemctl try-restart "$unit.service"
    done
    say "then: systemctl enable --now $units"
fi
