"""What a Socket.IO client may send (gateway.realtime.sio_packets), judged without I/O."""

from __future__ import annotations

import json
from typing import Any

import pytest
from socketio import packet as sio_packet
from socketio.packet import Packet

from gateway.realtime.sio_packets import decode, error_frames, event_problem

pytestmark = pytest.mark.unit


# What a client sends -> the packet it decodes to: (type, ack id, data).
CLIENT_SENDS: dict[str, tuple[int, int | None, Any]] = {
    '0{"token":"x"}': (sio_packet.CONNECT, None, {"token": "x"}),
    "1": (sio_packet.DISCONNECT, None, None),
    '2["request_vms_list"]': (sio_packet.EVENT, None, ["request_vms_list"]),
    '21["vm_action",{}]': (sio_packet.EVENT, 1, ["vm_action", {}]),
    "31[]": (sio_packet.ACK, 1, []),
}


@pytest.mark.parametrize("data", list(CLIENT_SENDS))
def test_packets_a_client_may_send(data: str) -> None:
    pkt = decode(Packet, data)
    assert pkt is not None
    assert (pkt.packet_type, pkt.id, pkt.data) == CLIENT_SENDS[data]


@pytest.mark.parametrize(
    "data",
    [
        "",
        "x",
        "2[",
        "4",  # CONNECT_ERROR is the server's
        '4{"message":"x"}',
        '51-["e",{"_placeholder":true,"num":0}]',
        "9",
        b"\x00binary",
        "2" + "1" * 200,  # an ack id too long to be one
    ],
)
def test_packets_a_client_may_not_send(data: Any) -> None:
    with pytest.raises(ValueError):
        decode(Packet, data)


@pytest.mark.parametrize(
    "data", [None, [], {}, "request_vms_list", [5], [None], [{"a": 1}], ["connect"], ["disconnect"]]
)
def test_event_shapes_refused(data: Any) -> None:
    assert event_problem(data)


def test_event_shapes_accepted() -> None:
    assert event_problem(["request_metrics", {"name": "web-01"}]) is None
    assert event_problem(["anything-else"]) is None  # unknown events get their own answer


def test_error_frames_answer_as_event_and_ack() -> None:
    pkt = decode(Packet, "27[5]")
    event, ack = error_frames(Packet, pkt, "an event's name must be a string")
    assert event.startswith('2["error",')
    assert json.loads(ack[2:])[0]["status"] == 400 and ack.startswith("37")
    assert len(error_frames(Packet, decode(Packet, "2[5]"), "x")) == 1
