# The gateway: gunicorn, one worker, many threads (see docs/API.md for why one worker).
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
    && useradd --system --no-create-home kvmsup \
    && mkdir -p /data \
    && chown kvmsup:kvmsup /data
USER kvmsup
ENV HOST=0.0.0.0 PORT=5000 KVMSUP_MQTT_URL=mqtt://broker:1883 KVMSUP_DB=/data/gateway.db
VOLUME ["/data"]
EXPOSE 5000
CMD ["kvmsup-gateway"]
