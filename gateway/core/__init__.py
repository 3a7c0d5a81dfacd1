"""The gateway's in-memory model of the fleet, in plain Python: the cache of hosts and VMs
(`state`), the bodies read from it (`views`, `readviews`), commands as jobs (`job`, `jobs`,
their table `jobtable`, their clock and deadlines `deadlines`), MQTT payloads decoded into models
(`ingest`), each VM's open minute (`history`), the audit and history records and the job ↔
audit mapping (`records`) and the drop counts (`drops`).

May import: `shared`, `gateway.errors`, and each other. No Flask, paho, Socket.IO or SQLite:
the adapters, the web layer and the realtime layer build on this, never the other way.
"""
