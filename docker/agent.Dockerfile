# The agent: talks to the host's libvirtd through its mounted socket.
#
# Debian's python3 and libvirt on debian:bookworm-slim, so a site without a container registry
# or PyPI mirror can rebuild it from its own Debian mirror and a local base (docker/README.md).
# Two stages: libvirt-python compiles against libvirt's headers, so the compiler, pkg-config and
# libvirt-dev live in the build stage only. The final image holds the virtualenv, the libvirt
# client library it links to, and an unprivileged user; it runs with a read-only root file
# system and no capabilities (docker-compose.yml). The user reaches libvirtd through the
# socket's group: compose adds the host's libvirt group id (KVMSUP_LIBVIRT_GID, docker/README.md).

FROM debian:bookworm-slim AS build
# BUILD_CA_CERTS: PEM text of extra CA certificates pip must trust, for a site whose HTTPS goes
# through an intercepting proxy (docker/README.md). Empty by default: pip then trusts only
# Debian's bundle. Used in this stage only; the final image carries neither it nor pip's cache.
ARG BUILD_CA_CERTS=""
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev ca-certificates libvirt-dev pkg-config gcc \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared/ shared/
COPY gateway/ gateway/
COPY agent/ agent/
RUN if [ -n "$BUILD_CA_CERTS" ]; then \
        printf '%s\n' "$BUILD_CA_CERTS" > /usr/local/share/ca-certificates/build-extra.crt \
        && update-ca-certificates; \
    fi \
    && python3 -m venv /opt/kvmsup \
    && PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
        /opt/kvmsup/bin/pip install --no-cache-dir '.[agent]'

FROM debian:bookworm-slim
# libvirt0: the shared library libvirt-python loads. A fixed uid so a host can give it rights
# (a polkit rule, a matching host user) that survive a rebuild.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 libvirt0 \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin kvmsup
COPY --from=build /opt/kvmsup /opt/kvmsup
ENV PATH=/opt/kvmsup/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LIBVIRT_URI=qemu:///system \
    KVMSUP_MQTT_URL=mqtts://broker:8883
USER kvmsup
CMD ["kvmsup-agent"]
