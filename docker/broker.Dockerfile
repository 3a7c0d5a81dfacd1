# The official Mosquitto 2 image with the project's broker configs, run as the image's own
# unprivileged `mosquitto` user (uid 1883).
#
# KVMSUP_BROKER_MODE picks the config at start (docker/broker-entrypoint.sh):
# - production, the default: broker/mosquitto.conf (TLS on 8883, passwords, ACL, persistence),
#   reading /mosquitto/secrets/ (passwd, acl, ca.crt, server.crt, server.key; docker/README.md).
#   Without them the container refuses to start and names what is missing.
# - dev: docker/mosquitto.compose.conf (anonymous, plain 1883), only when set explicitly, with a
#   WARNING block in the log.
FROM eclipse-mosquitto:2
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
