# The official Mosquitto 2 image with the project's broker configs.
#
# Two modes, chosen at start:
# - production (broker/mosquitto.conf: TLS on 8883, passwords, ACL, persistence) when the
#   provisioned secrets are mounted at /mosquitto/secrets/ (passwd, acl, ca.crt, server.crt,
#   server.key; see broker/README.md), or when KVMSUP_BROKER_MODE=production, which then fails
#   loudly if they are missing instead of starting open;
# - first run (docker/mosquitto.compose.conf: anonymous, plain 1883 on the compose network)
#   otherwise, with a warning in the log.
FROM eclipse-mosquitto:2
# Only the configs: a secrets directory provisioned inside broker/ must never end up in the image.
COPY broker/mosquitto.conf broker/mosquitto.dev.conf /mosquitto/config/kvmsup/
COPY docker/mosquitto.compose.conf /mosquitto/config/mosquitto.conf
EXPOSE 1883 8883
ENV KVMSUP_BROKER_MODE=auto
CMD ["/bin/sh", "-c", "\
if [ -e /mosquitto/secrets/passwd ] || [ \"$KVMSUP_BROKER_MODE\" = production ]; then \
  exec /usr/sbin/mosquitto -c /mosquitto/config/kvmsup/mosquitto.conf; \
fi; \
echo 'kvmsup broker: no /mosquitto/secrets/passwd: FIRST-RUN config, anonymous and without TLS' >&2; \
exec /usr/sbin/mosquitto -c /mosquitto/config/mosquitto.conf"]
