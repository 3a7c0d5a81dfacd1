"""What the agent and the gateway share: the message models (`messages`, with the bounds of
their figures and texts in `bounds`, snapshot command params in `snapshots`, the guest data in
`guest`), the MQTT topics and their QoS/retain policy (`topics`), the broker URL
(`broker_url`), credential redaction (`redact`), the settings both read (`settings`), the one
paho client setup (`mqtt`) and strict JSON text (`strict_json`).

May import: pydantic, pydantic-settings and the standard library; paho in `mqtt` only. Never
`agent` or `gateway` (both build on this), Flask, libvirt or SQLite.
"""
