# The gateway: gunicorn, one worker, many threads (see docs/API.md for why one worker).
# Nothing to compile (pure-Python wheels), so one stage. It runs as an unprivileged user with a
# read-only root file system and no capabilities (docker-compose.yml); it writes only /data
# (its database) and /tmp (gunicorn's worker heartbeat file; a tmpfs in compose).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared/ shared/
COPY gateway/ gateway/
COPY agent/ agent/
# /data holds KVMSUP_DB. It must exist, owned by kvmsup, before USER: a new named volume
# mounted there copies this directory's owner; without it the volume is root-owned and the
# gateway cannot open its database. /app stays root's (the code is read-only to the service).
RUN pip install --no-cache-dir '.[gateway]' \
    && useradd --system --uid 10002 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin kvmsup \
    && mkdir -p /data \
    && chown kvmsup:kvmsup /data
USER kvmsup
ENV HOST=0.0.0.0 PORT=5000 KVMSUP_MQTT_URL=mqtts://broker:8883 KVMSUP_DB=/data/gateway.db \
    PYTHONDONTWRITEBYTECODE=1
VOLUME ["/data"]
EXPOSE 5000
CMD ["kvmsup-gateway"]
