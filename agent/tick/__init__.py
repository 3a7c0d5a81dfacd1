"""The periodic metrics: one bulk libvirt read per tick turned into host and VM metrics (SPEC §3).

Owns `ticker` (the clock and the sampling thread), `sampler` (counters between ticks into
metrics messages) and `metrics` (the formulas, pure).

May import: `agent.config`, `agent.errors`, `agent.domstate`, `agent.inventory`,
`agent.publisher`, `agent.hypervisor`, `shared`.
"""
