#!/bin/sh
# Starts the broker container's Mosquitto in one of two modes, chosen by KVMSUP_BROKER_MODE:
#
#   production (the default): broker/mosquitto.conf, TLS on 8883, passwords and ACL. Every file it
#     reads must be in /mosquitto/secrets/ (see docker/README.md); when one is missing the broker
#     refuses to start and says which, rather than coming up open.
#   dev: docker/mosquitto.compose.conf, anonymous plain MQTT on 1883. Only when asked for by name,
#     and announced with a WARNING block in the log at every start.
#
# POSIX sh: the image runs it with dash.
set -eu

secrets=/mosquitto/secrets
mode="${KVMSUP_BROKER_MODE:-production}"

case "$mode" in
    production)
        missing=""
        for file in passwd acl ca.crt server.crt server.key; do
            [ -r "$secrets/$file" ] || missing="$missing $file"
        done
        if [ -n "$missing" ]; then
            {
                echo "kvmsup broker: REFUSING TO START in production mode."
                echo "  Missing or unreadable in $secrets/:$missing"
                echo "  Write passwd and acl with broker/provision.sh, add the TLS certificate and"
                echo "  key, mount the directory there and make it readable by uid 1883"
                echo "  (docker/README.md). For a throwaway trial on one machine only, start it"
                echo "  with KVMSUP_BROKER_MODE=dev (anonymous, no TLS)."
            } >&2
            exit 78 # EX_CONFIG: a restart policy retries, and the log repeats why
        fi
        exec mosquitto -c /mosquitto/config/kvmsup/mosquitto.conf
        ;;
    dev)
        {
            echo "################################################################################"
            echo "WARNING: kvmsup broker in DEVELOPMENT mode (KVMSUP_BROKER_MODE=dev):"
            echo "WARNING: ANONYMOUS clients, NO ACL, NO TLS on port 1883."
            echo "WARNING: anyone who reaches this port can read every VM's state and start,"
            echo "WARNING: stop or destroy any VM. Never publish it beyond this machine."
            echo "################################################################################"
        } >&2
        exec mosquitto -c /mosquitto/config/mosquitto.conf
        ;;
    *)
        echo "kvmsup broker: KVMSUP_BROKER_MODE must be 'production' (the default) or 'dev'," \
            "not '$mode'" >&2
        exit 64 # EX_USAGE
        ;;
esac
