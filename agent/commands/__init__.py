"""Commands from the broker to libvirt and their replies (SPEC §4).

Owns the path of one request: `requests` decodes it (pure), `intake` refuses what must not run
and hands the rest to `executor`, which admits it and runs it against its `deadlines` entry
through the worker pools of `settings`, judged by `transitions` (pure: which action applies to
which state). `replies` is the id cache, `jobs` the commands not answered yet (one final reply
each), `outcomes` builds the final replies, `shutdown` waits for a guest asked to stop and
escalates to destroy. Deadlines read an injected `agent.clock.Clock`.

May import: `agent.clock`, `agent.errors`, `agent.refusals`, `agent.bus`, `agent.publisher`,
`agent.inventory`, `agent.hypervisor`, `shared`. Nothing outside `agent.service` imports it
except benchmarks reusing the pure `requests` and `transitions`.
"""
