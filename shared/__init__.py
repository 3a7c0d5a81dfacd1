"""What the agent and the gateway share: the message models (`messages`), the MQTT topics and
their QoS/retain policy (`topics`), the broker URL (`broker_url`) and credential redaction
(`redact`).

May import: pydantic and the standard library only; never `agent` or `gateway` (both build on
this), paho, Flask, libvirt or SQLite.
"""
