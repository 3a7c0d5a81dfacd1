# Debian's Mosquitto 2 with the project's broker configs, run as the unprivileged `mosquitto`
# user (uid 1883, fixed so the operator can hand it the secrets directory: docker/README.md).
#
# KVMSUP_BROKER_MODE picks the config at start (docker/broker-entrypoint.sh):
# - production, the default: broker/mosquitto.conf (TLS on 8883, passwords, ACL, persistence),
#   reading /mosquitto/secrets/ (passwd, acl, ca.crt, server.crt, server.key; docker/README.md).
#   Without them the container refuses to start and names what is missing.
# - dev: docker/mosquitto.compose.conf (anonymous, plain 1883), only when set explicitly, with a
#   WARNING block in the log.
FROM debian:bookworm-slim
# The user first, with its fixed ids: the package's own set-up then finds it and keeps it.
RUN groupadd --system --gid 1883 mosquitto \
    && useradd --system --uid 1883 --gid 1883 --no-create-home --home-dir /var/lib/mosquitto \
        --shell /usr/sbin/nologin mosquitto \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
# Only the configs and the start script: a secrets directory provisioned inside the checkout
# must never end up in the image.
COPY broker/mosquitto.conf broker/mosquitto.dev.conf /mosquitto/config/kvmsup/
COPY docker/mosquitto.compose.conf /mosquitto/config/mosquitto.conf
COPY docker/broker-entrypoint.sh /usr/local/bin/kvmsup-broker
# /mosquitto/data is the persistence volume: a new named volume copies this directory's owner,
# so it must belong to the user Mosquitto runs as. Started as that user (not as root dropping
# privileges itself), Mosquitto needs no capability at all: compose drops them all.
RUN chmod 0755 /usr/local/bin/kvmsup-broker \
    && mkdir -p /mosquitto/data /mosquitto/secrets \
    && chown mosquitto:mosquitto /mosquitto/data
USER mosquitto
ENV KVMSUP_BROKER_MODE=production
EXPOSE 8883
CMD ["kvmsup-broker"]
