"""The userspace delay line (harness/live/delay_relay.py): bytes toward the target wait the delay, in order, answers
come back at once, a half-close passes through, and a target with nothing listening resets the client."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from harness.core.errors import InputError
from harness.live.delay_relay import DelayRelay, RelayStats, Route


async def _echo_server():
    """A server that echoes each chunk and closes its side when the client half-closes."""

    async def handle(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_bytes_toward_the_target_wait_the_delay_in_order_and_eof_passes_through():
    async def scenario():
        server = await _echo_server()
        port = server.sockets[0].getsockname()[1]
        relay = DelayRelay([Route("127.0.0.1", 0, "127.0.0.1", port)], delay_ms=40.0)
        await relay.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.ports()[0])
        t0 = time.monotonic()
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        rtt_ms = (time.monotonic() - t0) * 1000.0
        # Many small writes, each a chunk of its own on the relay's side as often as not: the order must hold.
        sent = b"".join(f"{k:05d}".encode() for k in range(2000))
        for k in range(0, len(sent), 5):
            writer.write(sent[k : k + 5])
            if k % 500 == 0:
                await asyncio.sleep(0.001)
        writer.write_eof()
        got = await reader.read()  # up to the server's close, which follows our half-close through the relay
        writer.close()
        await relay.stop()
        server.close()
        return rtt_ms, got, sent, relay.stats.summary()

    rtt_ms, got, sent, stats = asyncio.run(scenario())
    assert rtt_ms >= 40.0  # held one way only: an answer is not delayed
    assert rtt_ms < 40.0 + 1000.0
    assert got == sent
    assert stats["chunks"] >= 2 and stats["bytes"] == 4 + len(sent)
    assert 0.0 <= stats["late_p50_ms"] <= stats["late_max_ms"]


def test_with_no_delay_it_is_a_plain_relay_and_a_dead_target_resets_the_client():
    async def scenario():
        server = await _echo_server()
        port = server.sockets[0].getsockname()[1]
        free = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        dead_port = free.sockets[0].getsockname()[1]
        free.close()
        await free.wait_closed()
        relay = DelayRelay(
            [Route("127.0.0.1", 0, "127.0.0.1", port), Route("127.0.0.1", 0, "127.0.0.1", dead_port)], 0.0
        )
        await relay.start()
        live, dead = relay.ports()
        reader, writer = await asyncio.open_connection("127.0.0.1", live)
        writer.write(b"hello")
        echoed = await reader.readexactly(5)
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", dead)
        writer.write(b"anyone?")
        try:
            rest = await asyncio.wait_for(reader.read(), 5.0)
        except ConnectionResetError:
            rest = None
        writer.close()
        await relay.stop()
        server.close()
        return echoed, rest

    echoed, rest = asyncio.run(scenario())
    assert echoed == b"hello"
    assert not rest  # reset or closed without a byte


def test_routes_and_delays_are_checked():
    assert Route.parse("10.77.0.1:9001=127.0.0.1:9002") == Route("10.77.0.1", 9001, "127.0.0.1", 9002)
    for bad in ("10.77.0.1:9001", "a:b=c:d", "x=y"):
        with pytest.raises(InputError) as exc:
            Route.parse(bad)
        assert exc.value.field == "route"
    with pytest.raises(InputError) as exc:
        DelayRelay([], -1.0)
    assert exc.value.field == "delay_ms"


def test_the_command_says_ready_and_stops_on_sigterm_with_its_figures():
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.live.delay_relay", "--delay-ms", "5", "127.0.0.1:0=127.0.0.1:9"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY ") and '"delay_ms": 5.0' in line
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0 and '"chunks": 0' in err
    finally:
        proc.kill()
    bad = subprocess.run(
        [sys.executable, "-m", "harness.live.delay_relay", "--delay-ms", "5", "nonsense"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "LISTEN_HOST:PORT=TARGET_HOST:PORT" in bad.stderr


def test_the_late_time_median_comes_from_a_histogram_of_bounded_size():
    stats = RelayStats()
    for late in [0.01] * 10 + [0.3] * 5 + [7.0]:
        stats.add_late(late)
    s = stats.summary()
    assert s["late_p50_ms"] == pytest.approx(0.05) and s["late_max_ms"] == 7.0
    assert len(stats.late_counts) == 3
    assert RelayStats().summary()["late_p50_ms"] == 0.0
