"""The agent's exception hierarchy; adapters translate foreign errors into these."""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""

    code = "agent_error"


class HypervisorUnavailable(AgentError):
    """libvirt is not connected (daemon down, reconnecting)."""

    code = "libvirt_unavailable"


class DomainNotFound(AgentError):
    code = "vm_not_found"


class HypervisorError(AgentError):
    """A libvirt call failed; the message is libvirt's own."""

    code = "libvirt_error"


class CallTimeout(AgentError):
    """A libvirt call did not return before its deadline (a stuck QEMU monitor, say)."""

    code = "timeout"


class OutcomeUnknown(AgentError):
    """A libvirt action began before its command's deadline and has not answered: libvirt may
    still carry it out (a call sent to a frozen libvirtd cannot be recalled)."""

    code = "outcome_unknown"


class PoolClosed(AgentError, RuntimeError):
    """A call was handed to a worker pool after the agent began stopping: it never runs.

    A command still queued at stop has already been answered `agent_stopping` by the stop
    itself, so its worker ends quietly on this instead of logging a crash."""

    code = "agent_stopping"


class SnapshotRefused(AgentError):
    """A snapshot command refused before libvirt was asked to act; `code` says why (SPEC §3)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
