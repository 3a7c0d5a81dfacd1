"""What a Socket.IO client may send: pure checks of decoded packets, and the error answer."""

from __future__ import annotations

from typing import Any

from socketio import packet as sio_packet

# Event names python-socketio dispatches to its own connect/disconnect handlers even when a
# client sends them as ordinary events.
RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "__disconnect_final"})
CLIENT_PACKETS = (sio_packet.CONNECT, sio_packet.DISCONNECT, sio_packet.EVENT, sio_packet.ACK)


def decode(packet_class: Any, data: Any) -> Any:
    """The packet in an engine.io message, or ValueError for anything a client may not send:
    undecodable text, binary (this API has none), a server-only packet type."""
    if not isinstance(data, str):
        raise ValueError("binary message")
    if not data:
        raise ValueError("empty packet")  # the decoder would take it for an EVENT
    try:
        pkt = packet_class(encoded_packet=data)
    except Exception as exc:  # the decoder raises several types on garbage
        raise ValueError(f"undecodable packet ({type(exc).__name__})") from None
    if pkt.packet_type not in CLIENT_PACKETS or pkt.attachment_count:
        raise ValueError("packet type not accepted from a client")
    return pkt


def event_problem(data: Any) -> str | None:
    """Why an EVENT packet's data is not `[name, …]` with a name we may dispatch, or None."""
    if not isinstance(data, list) or not data:
        return "an event is a list: its name, then its payload"
    name = data[0]
    if not isinstance(name, str):
        return "an event's name must be a string"
    if name in RESERVED_EVENTS:
        return f"{name} is reserved and cannot be sent as an event"
    return None


def error_frames(packet_class: Any, pkt: Any, message: str) -> list[Any]:
    """A 400 as an `error` event, plus the ack when the client asked for one."""
    body = {"error": {"code": "bad_request", "message": message}, "status": 400, "event": None}
    namespace = pkt.namespace or "/"
    out = [packet_class(sio_packet.EVENT, data=["error", body], namespace=namespace).encode()]
    if pkt.id is not None:
        out.append(
            packet_class(sio_packet.ACK, data=[body], namespace=namespace, id=pkt.id).encode()
        )
    return out
