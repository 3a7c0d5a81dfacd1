# The gateway: gunicorn, one worker, many threads (see docs/API.md for why one worker).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared/ shared/
COPY gateway/ gateway/
COPY agent/ agent/
RUN pip install --no-cache-dir '.[gateway]' \
    && useradd --system --no-create-home kvmsup
USER kvmsup
ENV HOST=0.0.0.0 PORT=5000 KVMSUP_MQTT_URL=mqtt://broker:1883
EXPOSE 5000
CMD ["kvmsup-gateway"]
