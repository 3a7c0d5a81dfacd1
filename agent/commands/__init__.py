"""Commands from the broker to libvirt and their replies (SPEC §4).

Owns the path of one request: `requests` decodes it (pure), `intake` refuses what must not run
and hands the rest to `executor`, which runs it against its `tickets` deadline through the
hypervisor's call pools, judged by `transitions` (pure: which action applies to which state).

May import: `agent.errors`, `agent.refusals`, `agent.bus`, `agent.publisher`, `agent.inventory`,
`agent.hypervisor`, `shared`. Nothing outside `agent.service` imports it except benchmarks
reusing the pure `requests` and `transitions`.
"""
