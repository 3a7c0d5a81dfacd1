"""Home Assistant MQTT discovery (SPEC §6).

Owns `entities` (which entities a host and a VM offer, with their templates), `discovery` (the
config topics and payloads, pure), `sync` (keeps the configs on the broker in step with the
VMs: coalesced republishes and the migration from the earlier topic layout) and `guests` (the
IP address and filesystem sensors of what each VM's guest agent says).

May import: `agent.__version__` and `shared` only: it publishes through a callable it is given,
so it knows nothing of the bus, libvirt or the inventory.
"""
