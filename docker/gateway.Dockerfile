# The gateway: gunicorn with one gevent worker (see docs/API.md for why one worker).
#
# Debian's python3 on debian:bookworm-slim (docker/agent.Dockerfile says why). Two stages so
# the CA certificates a build may be given for pip stay out of the image; everything it
# installs is a wheel, nothing is compiled. It runs as an unprivileged user with a read-only
# root file system and no capabilities (docker-compose.yml); it writes only /data (its
# database) and /tmp (gunicorn's worker heartbeat file; a tmpfs in compose).

FROM debian:bookworm-slim AS build
# BUILD_CA_CERTS: as in docker/agent.Dockerfile, extra CA certificates for pip, or nothing.
ARG BUILD_CA_CERTS=""
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates \
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
        /opt/kvmsup/bin/pip install --no-cache-dir '.[gateway]'

FROM debian:bookworm-slim
# /data holds KVMSUP_DB. It must exist, owned by kvmsup, before USER: a new named volume
# mounted there copies this directory's owner; without it the volume is root-owned and the
# gateway cannot open its database. /opt/kvmsup stays root's (the code is read-only to it).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10002 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin kvmsup \
    && mkdir -p /data \
    && chown kvmsup:kvmsup /data
COPY --from=build /opt/kvmsup /opt/kvmsup
USER kvmsup
ENV PATH=/opt/kvmsup/bin:$PATH HOST=0.0.0.0 PORT=5000 KVMSUP_MQTT_URL=mqtts://broker:8883 \
    KVMSUP_DB=/data/gateway.db PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 5000
CMD ["kvmsup-gateway"]
