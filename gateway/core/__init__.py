"""The gateway's in-memory model of the fleet, in plain Python: the cache of hosts and VMs
(`state`), the bodies read from it (`views`, `readviews`), commands as jobs (`job`, `jobs`),
MQTT payloads decoded into models (`ingest`), each VM's open minute (`history`), the audit and
history records (`records`) and the drop counts (`drops`).

May import: `shared`, `gateway.errors`, and each other. No Flask, paho, Socket.IO or SQLite:
the adapters, the web layer and the realtime layer build on this, never the other way.
"""
