"""Threads publishing with `PromptClient.write_now` while its network thread reads a flood.

Shared by the plain-TCP test and the TLS one (where one OpenSSL connection must never be read
and written at once): every packet must arrive whole, each thread's in its order, and the
connection must stay up.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from shared.mqtt import PromptClient


@dataclass
class Flood:
    # Within Mosquitto's queue of 1000 messages per client (it drops beyond, any QoS).
    threads: int = 4  # QoS 1: paho sends at most the broker's receive maximum at once
    per_thread: int = 150
    qos0_threads: int = 2  # QoS 0: unlimited, and paho calls on_publish while it writes them
    qos0: int = 150
    inbound: int = 600
    # Payload of message `seq`: `(seq % pad_every) * pad_unit` bytes. Big ones are written in
    # parts (the socket buffer fills), where two unserialized writers would interleave.
    pad_every: int = 700
    pad_unit: int = 1
    # Every payload starts with it: a QoS 0 message of an earlier round that arrives late
    # (paho's network thread may still hold it) is not taken for one of this round.
    tag: str = "r0"
    prompt_writes: int = 0
    disconnects: list[Any] = field(default_factory=list)


# Messages of up to 420 kB, written in parts: the socket buffer fills under each.
BIG: dict[str, Any] = {
    "per_thread": 25,
    "qos0": 25,
    "inbound": 50,
    "pad_every": 8,
    "pad_unit": 60_000,
}


def _inbox(client: mqtt.Client) -> tuple[list[bytes], threading.Event]:
    got: list[bytes] = []
    subscribed = threading.Event()
    client.on_message = lambda _c, _u, msg: got.append(bytes(msg.payload))
    client.on_subscribe = lambda *_a: subscribed.set()
    return got, subscribed


def run_flood(
    writer: PromptClient, reader: mqtt.Client, cmd_topic: str, reply_topic: str, flood: Flood
) -> None:
    """Both clients connected (loop started). The reader floods `cmd_topic`, which the writer
    reads, while the writer's threads publish on `reply_topic`, which the reader reads."""
    inbound, writer_subscribed = _inbox(writer)
    replies, reader_subscribed = _inbox(reader)
    writer.on_disconnect = lambda *a: flood.disconnects.append(a)
    writer.on_publish = lambda *_a: None
    writer.subscribe(cmd_topic, qos=1)
    reader.subscribe(reply_topic, qos=1)
    assert writer_subscribed.wait(10) and reader_subscribed.wait(10), "no SUBACK"
    lock = threading.Lock()

    def publish(name: str, count: int, qos: int) -> None:
        done = 0
        for seq in range(count):
            pad = "x" * ((seq % flood.pad_every) * flood.pad_unit)
            writer.publish(reply_topic, f"{flood.tag}/{name}:{seq}:{pad}", qos=qos)
            done += writer.write_now()
        with lock:
            flood.prompt_writes += done

    def flood_in() -> None:
        for seq in range(flood.inbound):
            reader.publish(cmd_topic, f"{flood.tag}/in:{seq}:{'y' * (seq % 900)}", qos=1)

    workers = [threading.Thread(target=flood_in)]
    workers += [
        threading.Thread(target=publish, args=(f"t{i}", flood.per_thread, 1))
        for i in range(flood.threads)
    ]
    workers += [
        threading.Thread(target=publish, args=(f"q{i}", flood.qos0, 0))
        for i in range(flood.qos0_threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    expected = flood.threads * flood.per_thread
    ours = f"{flood.tag}/".encode()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answered = sum(p.startswith(ours + b"t") for p in replies)  # the QoS 1 ones
        if sum(p.startswith(ours) for p in inbound) >= flood.inbound and answered >= expected:
            break
        time.sleep(0.05)
    mine = [p[len(ours) :] for p in replies if p.startswith(ours)]
    check(mine, [p[len(ours) :] for p in inbound if p.startswith(ours)], flood)


def run_floods(
    writer: PromptClient,
    reader: mqtt.Client,
    cmd_topic: str,
    reply_topic: str,
    rounds: int,
    **shape: Any,
) -> None:
    """`rounds` floods of this `shape` (Flood's fields), and more (up to 12) until the threads
    have written themselves at least once: when the network thread is busy with big messages
    it holds the lock for most of a short round, and a round may leave every write to it."""
    prompt = 0
    for n in range(max(rounds, 12)):
        flood = Flood(tag=f"r{n}", **shape)
        run_flood(writer, reader, cmd_topic, reply_topic, flood)
        prompt += flood.prompt_writes
        if n + 1 >= rounds and prompt > 0:
            return
    raise AssertionError("no thread ever wrote itself: the floods did not test write_now")


def check(replies: list[bytes], inbound: list[bytes], flood: Flood) -> None:
    seqs: dict[str, list[int]] = defaultdict(list)
    for payload in replies:
        name, seq, pad = payload.decode().split(":")
        size = (int(seq) % flood.pad_every) * flood.pad_unit
        assert len(pad) == size, f"a message arrived cut or merged: {payload[:80]!r}"
        seqs[name].append(int(seq))
    for i in range(flood.threads):
        got = seqs[f"t{i}"]
        lost = sorted(set(range(flood.per_thread)) - set(got))
        assert not lost, f"thread t{i}: lost {lost[:10]} ({len(lost)})"
        first = next((k for k, seq in enumerate(got) if seq != k), None)
        assert first is None, f"thread t{i}: reordered from #{first}: {got[first : first + 5]}"
    for i in range(flood.qos0_threads):  # QoS 0 may be dropped by the broker, never reordered
        assert seqs[f"q{i}"] == sorted(seqs[f"q{i}"]), f"thread q{i}: reordered"
    got_in = sorted(int(p.decode().split(":")[1]) for p in inbound)
    assert got_in == list(range(flood.inbound)), "the writer lost messages it was sent"
    assert flood.disconnects == [], f"the writer's connection dropped: {flood.disconnects}"
