"""The inside of each VM as its guest agent (or the host) sees it: addresses, OS, hostname,
filesystems (SPEC §3, `…/vm/<uuid>/guest`).

Owns `reading` (libvirt's raw answers into a bounded `GuestInfo`, pure) and `watcher` (the
slow cadence per running VM, one bounded call in flight per VM on a pool of its own, publish
on change, clear with the VM).

May import: `agent.errors`, `agent.hypervisor`, `agent.homeassistant` (the sensors of each
guest), `agent.__version__`, `shared`, and for its wiring's types only `agent.config`,
`agent.inventory`, `agent.publisher`.
"""
