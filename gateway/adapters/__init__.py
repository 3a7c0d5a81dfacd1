"""The gateway's I/O toward its dependencies: the MQTT broker (`bus`, with the queue in front
of the ingest thread, `inbox`) and SQLite (`store`, `history_db`, `audit_db`).

May import: `shared`, `gateway.core`, `gateway.config`, `gateway.errors`, `gateway.blocking`.
Never Flask or Socket.IO, and never `gateway.web` or `gateway.realtime`.
"""
