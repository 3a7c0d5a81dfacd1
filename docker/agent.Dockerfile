# The agent: talks to the host's libvirtd through its mounted socket.
FROM python:3.11-slim
WORKDIR /app
RUN apt-get update \
    && apt-get install -y --no-install-recommends libvirt-dev pkg-config gcc \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY shared/ shared/
COPY gateway/ gateway/
COPY agent/ agent/
RUN pip install --no-cache-dir '.[agent]'
ENV LIBVIRT_URI=qemu:///system KVMSUP_MQTT_URL=mqtt://broker:1883
CMD ["kvmsup-agent"]
