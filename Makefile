# One-command setup, tests, demo. `make install` as root installs the apt packages too.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# The dashboard's browser test drives Debian's chromium. Ubuntu has it only as a snap (its
# chromium-browser .deb installs the snap, which fails without snapd): not installed there.
BROWSER := $(shell . /etc/os-release 2>/dev/null; if [ "$$ID" != ubuntu ]; then echo chromium; fi)
# Broker, libvirt-python's build deps, libvirtd + QEMU for the end-to-end tier, and Redis for the
# scale-out test (Socket.IO message queue).
APT_PACKAGES := mosquitto mosquitto-clients libvirt-dev libvirt-clients pkg-config gcc \
	python3-venv python3-dev openssl libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86 \
	redis-server $(BROWSER)
# Without their recommends: the container tier's Docker engine (dockerd, started by the tier
# when it is not running), Compose 1.29 and debootstrap (the tier makes the debian:bookworm-slim
# base from the Debian mirror when no registry is reachable); systemd for `systemd-analyze
# verify` of the host units (nothing needs it as PID 1).
APT_LEAN := docker.io docker-compose debootstrap systemd
# The e2e tier's Linux guest: a Debian kernel booted directly, busybox in its initramfs, lz4
# to unpack the kernel so QEMU can boot it without its (under TCG, slow) decompressor.
# Debian's small cloud kernel; Ubuntu's equivalent is its kvm flavour.
GUEST_KERNEL := $(shell . /etc/os-release 2>/dev/null; \
	if [ "$$ID" = ubuntu ]; then echo linux-image-kvm; else echo linux-image-cloud-amd64; fi)
APT_PACKAGES += $(GUEST_KERNEL) busybox-static lz4
# The guest agent the e2e guest runs (its binary and libraries go into the initramfs), and
# mkfs.ext2 for the guest's data disk.
APT_PACKAGES += qemu-guest-agent e2fsprogs
PYTEST_ARGS ?=
# pytest-xdist workers. Most service tests wait on processes and sockets, not on a core, so
# more workers than cores pay; the e2e tier stays on one worker (its own xdist group), and a
# module sharing a broker or stack stays on one worker (tests/conftest.py).
TEST_WORKERS ?= 4
XDIST := -n $(TEST_WORKERS) --dist loadgroup

.PHONY: install apt venv test test-unit test-service test-e2e e2e-env e2e-env-down lint bench \
	soak demo clean

install: apt venv

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	missing_lean=$$(for p in $(APT_LEAN); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing$$missing_lean" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "missing system packages; run as root:"; \
		echo "  apt-get update && apt-get install -y $(APT_PACKAGES) &&" \
			"apt-get install -y --no-install-recommends $(APT_LEAN)"; exit 1; \
	fi; \
	echo "installing: $$missing $$missing_lean"; \
	export DEBIAN_FRONTEND=noninteractive; apt-get update -q && \
	if [ -n "$$missing" ]; then apt-get install -y -q $$missing; fi && \
	if [ -n "$$missing_lean" ]; then apt-get install -y -q --no-install-recommends $$missing_lean; fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[agent,gateway,dev]'
	touch $@

test: install
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-service: install
	$(PY) -m pytest -m service $(XDIST) $(PYTEST_ARGS)

test-e2e: install
	$(PY) -m pytest -m e2e $(PYTEST_ARGS)

# A private libvirtd + virtlogd for humans poking at the e2e tier (prints KVMSUP_E2E_DIR).
e2e-env: install
	$(PY) -m tests.support.libvirtd up

e2e-env-down: venv
	$(PY) -m tests.support.libvirtd down

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy agent gateway shared

bench: install
	$(PY) benchmarks/agent_tick.py
	$(PY) benchmarks/gateway_read.py
	$(PY) benchmarks/gateway_ingest.py
	$(PY) benchmarks/sio_fanout.py
	$(PY) benchmarks/prometheus_scrape.py

# The whole stack for SOAK_MINUTES under churn; RSS, threads and fds per process each minute.
SOAK_MINUTES ?= 10
soak: install
	$(PY) benchmarks/soak.py --minutes $(SOAK_MINUTES)

# Mosquitto, two agents on the demo node files and the gateway on http://127.0.0.1:5000.
demo: install
	$(PY) scripts/demo.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# One tier at a time: the wheel in fresh venvs, host units and install script (package); the
# images built and run with docker-compose (container; root, or a running Docker engine).
.PHONY: test-package test-container
test-package: install
	$(PY) -m pytest -m package $(PYTEST_ARGS)

test-container: install
	$(PY) -m pytest -m container $(PYTEST_ARGS)
