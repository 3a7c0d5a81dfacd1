#!/usr/bin/env bash
# Run the e2e tier inside a fresh Debian chroot, the way a container-like CI runner would:
# there / is no mount point and libvirt cannot give QEMU its own mount namespace.
# Usage (as root): scripts/e2e-in-chroot.sh [pytest args...]
#   KVMSUP_CHROOT  the chroot directory, built on first use and reused (/var/tmp/kvmsup-chroot)
#   DEBIAN_SUITE   the release debootstrap installs (bookworm)
#   DEBIAN_MIRROR  the mirror it installs from (http://deb.debian.org/debian)
# The repository is bind-mounted at its own path; the venv lives in the chroot (/opt/venv), so
# the host's tree gets no second .venv. /run inside is a tmpfs of its own and /var/cache the
# chroot's, so the tier's fixed paths do not collide with an e2e run on the host.
set -euo pipefail

ROOT_DIR=${KVMSUP_CHROOT:-/var/tmp/kvmsup-chroot}
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [ "$(id -u)" != 0 ]; then
	echo "e2e-in-chroot: run as root (debootstrap, mount and libvirtd need it)" >&2
	exit 1
fi
if ! command -v debootstrap >/dev/null; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
fi
if [ ! -e "$ROOT_DIR/etc/debian_version" ]; then
	debootstrap --variant=minbase "$SUITE" "$ROOT_DIR" "$MIRROR"
fi
cp /etc/resolv.conf "$ROOT_DIR/etc/resolv.conf"
# pip inside trusts what the host trusts (a TLS-inspecting proxy's CA, for one).
PIP_CERT_ARG=()
if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
	cp /etc/ssl/certs/ca-certificates.crt "$ROOT_DIR/opt/host-ca-certificates.crt"
	PIP_CERT_ARG=(PIP_CERT=/opt/host-ca-certificates.crt)
fi

if mountpoint -q "$ROOT_DIR/proc"; then
	echo "e2e-in-chroot: $ROOT_DIR/proc is mounted: another run uses this chroot" >&2
	exit 1
fi

inside() { # the pids whose root is the chroot
	local link pid
	for link in /proc/[0-9]*/root; do
		pid=${link#/proc/}
		pid=${pid%/root}
		if [ "$(readlink "$link" 2>/dev/null)" = "$ROOT_DIR" ]; then echo "$pid"; fi
	done
}

MOUNTED=()
cleanup() {
	# Whatever still runs inside (the tests' libvirtd holder stops its daemons and guests on
	# SIGTERM) goes first, or the mounts below stay busy.
	local pids i
	pids=$(inside)
	if [ -n "$pids" ]; then
		kill $pids 2>/dev/null || true
		for i in $(seq 50); do
			[ -z "$(inside)" ] && break
			sleep 0.2
		done
		pids=$(inside)
		[ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
	fi
	for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
		umount "${MOUNTED[i]}" || umount -l "${MOUNTED[i]}" || true
	done
}
trap cleanup EXIT
trap "exit 130" INT TERM

mnt() { # mnt TARGET MOUNT-ARGS...
	local target=$ROOT_DIR$1
	shift
	mkdir -p "$target"
	mount "$@" "$target"
	MOUNTED+=("$target")
}
# On a host whose / is a shared mount, the mounts below (and the tests' own bind mounts) would
# show up in other mount namespaces too; then the chroot gets a private mount of its own.
case $(findmnt -no PROPAGATION --target "$ROOT_DIR") in
shared*)
	mnt "" --bind "$ROOT_DIR"
	mount --make-private "$ROOT_DIR"
	;;
esac
mnt /proc -t proc proc
mnt /sys -t sysfs sysfs
mnt /dev --bind /dev # /dev/kvm and /dev/null as the host has them
mnt /dev/pts -t devpts -o newinstance,ptmxmode=0666 devpts
mnt /run -t tmpfs tmpfs
mnt "$REPO" --bind "$REPO"

chroot "$ROOT_DIR" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
	DEBIAN_FRONTEND=noninteractive "${PIP_CERT_ARG[@]}" /bin/bash -c '
set -e
command -v make >/dev/null && command -v python3 >/dev/null ||
	{ apt-get update -q && apt-get install -y -q make python3; }
cd "$1"
VENV=/opt/venv make install
shift
KVMSUP_E2E_REQUIRE=1 /opt/venv/bin/python -m pytest -m e2e -p no:cacheprovider "$@"
' e2e-in-chroot "$REPO" "$@"
