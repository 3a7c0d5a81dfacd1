"""Incoming `cmd` and `set` messages → the command executor, with the replies sent back.

Refuses a response topic outside the host's reply prefix and any retained request, decodes the
rest once (`agent.commands.requests`), and answers on the request's response topic with its
correlation.
"""

from __future__ import annotations

import logging
import time

from agent.bus import Bus, Inbound, Outbound
from agent.commands.executor import CommandExecutor
from agent.commands.requests import (
    Rejection,
    correlation_text,
    decode_command,
    decode_set,
    valid_response_topic,
)
from agent.publisher import Publisher
from agent.refusals import RefusalLog
from shared.messages import CommandReply, dump, utc_now
from shared.topics import Topics

logger = logging.getLogger(__name__)


class Intake:
    def __init__(
        self,
        host: str,
        topics: Topics,
        bus: Bus,
        executor: CommandExecutor,
        publisher: Publisher,
    ) -> None:
        self.host = host
        self.topics = topics
        self.bus = bus
        self.executor = executor
        self.publisher = publisher
        self.refusals = RefusalLog()

    def on_command(self, msg: Inbound) -> None:
        if not valid_response_topic(msg.response_topic, self.topics.reply_prefix(self.host)):
            self.refusals.refused(
                "bad_response_topic",
                "",
                "command with response topic %r, not under %s (payload %r)",
                msg.response_topic,
                self.topics.reply_prefix(self.host),
                msg.payload[:256],
            )
            self.publisher.event(
                kind="command",
                event="refused",
                status="rejected",
                error={
                    "code": "bad_response_topic",
                    "message": f"response topic {str(msg.response_topic)[:128]!r} refused",
                },
            )
            return
        response_topic = msg.response_topic
        assert response_topic is not None

        def send(reply: CommandReply) -> None:
            corr = msg.correlation if msg.correlation is not None else (reply.id or "").encode()
            self.bus.publish(Outbound(response_topic, dump(reply), 1, False), correlation=corr)

        if msg.retain:
            self.refusals.refused(
                "retained", "", "retained command on %s: %r", msg.topic, msg.payload[:256]
            )
            self.executor.reject(
                Rejection(
                    "retained", "retained commands are ignored", correlation_text(msg.correlation)
                ),
                send,
            )
            return
        decoded = decode_command(msg.payload, msg.correlation, utc_now())
        if isinstance(decoded, Rejection):
            self.refusals.refused(
                decoded.code,
                decoded.message,
                "bad command on %s: %s; payload %r",
                msg.topic,
                decoded.message,
                msg.payload[:256],
            )
            self.executor.reject(decoded, send)
        else:
            self.executor.submit(decoded, send)

    def on_set(self, uuid: str, msg: Inbound) -> None:
        if msg.retain:
            self.refusals.refused(
                "retained", "", "retained set on %s: %r", msg.topic, msg.payload[:256]
            )
            return
        decoded = decode_set(msg.payload, uuid, f"set-{time.time_ns()}", utc_now())
        if isinstance(decoded, Rejection):
            self.refusals.refused(
                decoded.code, decoded.message, "bad set on %s: %s", msg.topic, decoded.message
            )
            self.executor.reject(decoded, None)
        else:
            self.executor.submit(decoded, None)
