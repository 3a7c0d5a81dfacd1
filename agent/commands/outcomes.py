"""A command's final replies, built from what its calls found and what the inventory records."""

from __future__ import annotations

from dataclasses import dataclass

from agent.commands.deadlines import CommandDeadline, NotBegun
from agent.commands.transitions import ALLOWED_FROM, TARGET
from agent.errors import AgentError, CallTimeout, OutcomeUnknown
from agent.inventory import Inventory
from shared.messages import CommandReply, CommandRequest, ErrorInfo, ReplyStatus, VmStateName


@dataclass
class Progress:
    """What a call worker found and did for one command (read by the job thread)."""

    before: VmStateName | None = None
    acted: bool = False
    after: VmStateName | None = None


class Outcomes:
    """Builds the replies; the VM's name, and its state unless the caller knows it, come from
    the inventory."""

    def __init__(self, host: str, inventory: Inventory) -> None:
        self.host = host
        self._inventory = inventory

    def final(
        self,
        request: CommandRequest,
        status: ReplyStatus,
        *,
        state: VmStateName | None = None,
        changed: bool | None = None,
        escalated: bool | None = None,
        error: ErrorInfo | None = None,
    ) -> CommandReply:
        vm = self._inventory.get(request.vm)
        return CommandReply(
            id=request.id,
            host=self.host,
            status=status,
            action=request.action,
            vm=request.vm,
            name=vm.name if vm else None,
            state=state or (vm.state if vm else None),
            changed=changed,
            escalated=escalated,
            error=error,
        )

    def after_first_call(self, request: CommandRequest, progress: Progress) -> CommandReply | None:
        """The final reply once the first call returned; None for a shutdown that was sent
        (its end comes from the guest)."""
        action, before = request.action, progress.before
        assert before is not None
        if before in TARGET.get(action, ()):
            return self.final(request, "succeeded", state=before, changed=False)
        if before not in ALLOWED_FROM[action]:
            return self.final(
                request,
                "failed",
                state=before,
                error=ErrorInfo(
                    code="invalid_state", message=f"cannot {action} a VM that is {before}"
                ),
            )
        if action == "shutdown":
            return None
        return self.final(request, "succeeded", state=progress.after, changed=True)

    def of_error(
        self, request: CommandRequest, deadline: CommandDeadline, exc: AgentError
    ) -> CommandReply:
        unknown = deadline.cut_off_error(exc)
        if unknown is not None:
            exc = unknown
        if isinstance(exc, NotBegun | OutcomeUnknown | CallTimeout):
            return self.final(
                request, "timed_out", error=ErrorInfo(code=exc.code, message=str(exc))
            )
        return self.final(request, "failed", error=ErrorInfo(code=exc.code, message=str(exc)))
