# The agent: talks to the host's libvirtd through its mounted socket.
#
# Two stages: libvirt-python compiles against libvirt's headers, so the compiler, pkg-config and
# libvirt-dev live in the build stage only. The final image holds the virtualenv, the libvirt
# client library it links to, and an unprivileged user; it runs with a read-only root file
# system and no capabilities (docker-compose.yml). The user reaches libvirtd through the
# socket's group: compose adds the host's libvirt group id (KVMSUP_LIBVIRT_GID, docker/README.md).

FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends libvirt-dev pkg-config gcc \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared/ shared/
COPY gateway/ gateway/
COPY agent/ agent/
RUN python -m venv /opt/kvmsup \
    && /opt/kvmsup/bin/pip install --no-cache-dir '.[agent]'

FROM python:3.11-slim
# libvirt0: the shared library libvirt-python loads. A fixed uid so a host can give it rights
# (a polkit rule, a matching host user) that survive a rebuild.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libvirt0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin kvmsup
COPY --from=build /opt/kvmsup /opt/kvmsup
ENV PATH=/opt/kvmsup/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    LIBVIRT_URI=qemu:///system \
    KVMSUP_MQTT_URL=mqtts://broker:8883
USER kvmsup
CMD ["kvmsup-agent"]
