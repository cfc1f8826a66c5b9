"""``python -m pbnb serve --backplane ... --workers N``: real broker processes, a real redis-server."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
import trustme
from backplane_helpers import TARGET, TIMEOUT, Broker, CounterCopy
from redis_helpers import free_port, needs_redis, redis_server

import pbnb as pb

pytestmark = [pytest.mark.slow, needs_redis]  # a redis-server process per test


async def observe(port: int) -> tuple[pb.Client, pb.RemoteReference, int, CounterCopy]:
    client = await pb.connect("127.0.0.1", port)
    root = await client.getRootObject()
    return client, root, await root.callRemote("pid"), await root.callRemote("counter")


async def exited(pid: int) -> None:
    """Wait until process ``pid`` has exited: then its sockets are closed.

    Before that, a connection may still be queued on a killed worker's listening
    socket, which the kernel resets when it closes it. A pidfd becomes readable
    when its process exits.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_reader(pidfd, done.set)
    try:
        await asyncio.wait_for(done.wait(), TIMEOUT)
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


async def test_workers_share_one_port_and_one_state():
    async with redis_server() as redis:
        broker = await Broker.start(TARGET, "--port", "0", "--backplane", redis.url, "--workers", "2")
        clients = []
        try:
            assert broker.port is not None, broker.first_line
            assert b"with 2 workers" in broker.first_line
            by_pid: dict[int, list] = {}
            # The kernel spreads connections over the workers: connect until both answered.
            for _ in range(200):
                client, root, pid, copy = await observe(broker.port)
                clients.append(client)
                by_pid.setdefault(pid, []).append((root, copy))
                if len(by_pid) == 2 and min(map(len, by_pid.values())) >= 2:
                    break
            assert len(by_pid) == 2, "every connection went to one worker"
            (first_root, _), *_ = by_pid[min(by_pid)]
            other = by_pid[max(by_pid)]
            # A change made by one worker's code reaches observers on both.
            assert await first_root.callRemote("bump") == 1
            assert await first_root.callRemote("bump") == 2
            copies = [copy for pairs in by_pid.values() for _, copy in pairs]
            for copy in copies:
                await copy.wait_until(lambda copy=copy: copy.value == 2)
            # A client writing through the other worker reaches them too.
            writer = other[0][1]
            await writer._pb_writer.callRemote("set", "label", "from the other worker")
            for copy in copies:
                if copy is not writer:  # the writer's copy is not sent its own write back
                    await copy.wait_until(lambda copy=copy: copy.label == "from the other worker")
        finally:
            for client in clients:
                await client.close()
            assert await broker.stop() == 0
        assert "worker 1" in broker.stderr and "worker 2" in broker.stderr


async def test_a_reconnecting_client_whose_worker_dies_lands_on_another_and_sees_the_state():
    async with redis_server() as redis:
        broker = await Broker.start(TARGET, "--port", "0", "--backplane", redis.url, "--workers", "2")
        reconnecting = pb.ReconnectingClient("127.0.0.1", broker.port, initial_delay=0.05, max_delay=0.5)
        try:
            root = await reconnecting.root()
            dead_pid = await root.callRemote("pid")
            await root.callRemote("set", 1)
            # A bystander on another connection keeps changing the state meanwhile.
            bystander, bystander_root, _, _ = await observe(broker.port)
            lost = asyncio.ensure_future(reconnecting.wait_for(pb.ReconnectStatus.WAITING))
            os.kill(dead_pid, signal.SIGKILL)  # the worker dies, mid-whatever
            await asyncio.wait_for(lost, TIMEOUT)
            for value in (2, 3, 4):
                try:
                    await bystander_root.callRemote("set", value)
                except (pb.PBConnectionLost, pb.DeadReferenceError):
                    # The bystander was on the dead worker too: it reconnects by hand.
                    await bystander.close()
                    bystander, bystander_root, _, _ = await observe(broker.port)
                    await bystander_root.callRemote("set", value)
            new_root = await reconnecting.root()
            assert await new_root.callRemote("pid") != dead_pid
            copy = await new_root.callRemote("counter")
            # The copy starts from the state its worker has applied from the shared
            # log, and follows it to the last change made elsewhere.
            await copy.wait_until(lambda: copy.value == 4)
            await bystander_root.callRemote("set", 5)
            await copy.wait_until(lambda: copy.value == 5)
            await bystander.close()
        finally:
            await reconnecting.close()
            assert await broker.stop() == 0
        assert "starting another" in broker.stderr


async def test_redis_down_at_start_is_a_clear_error():
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    broker = await Broker.start(TARGET, "--port", "0", "--backplane", nowhere)
    assert broker.first_line == b""  # it never listened
    assert await broker.process.wait() == 1
    await broker.stop()
    assert f"cannot reach Redis at {nowhere}" in broker.stderr
    supervisor = await Broker.start(TARGET, "--port", "0", "--backplane", nowhere, "--workers", "2")
    assert await supervisor.process.wait() == 1
    await supervisor.stop()
    assert "cannot reach Redis" in supervisor.stderr and "before listening" in supervisor.stderr


async def test_rediss_with_a_password(tmp_path):
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    tls = (str(tmp_path / "server.pem"), str(tmp_path / "server.pem"))
    async with redis_server(password="pa55word", tls=tls) as redis:
        url = f"{redis.url}?ssl_ca_certs={tmp_path / 'ca.pem'}"
        assert url.startswith("rediss://:pa55word@")
        broker = await Broker.start(TARGET, "--port", "0", "--backplane", url)
        try:
            assert broker.port is not None, broker.stderr
            client, root, _, copy = await observe(broker.port)
            await root.callRemote("bump")
            await copy.wait_until(lambda: copy.value == 1)
            await client.close()
        finally:
            assert await broker.stop() == 0
        assert "pa55word" not in broker.stderr and ":***@" in broker.stderr


pb.setUnjellyableForClass("examples.scaling.scoreboard.Scoreboard", CounterCopy)


async def test_the_three_process_setup_of_the_scaling_page():
    """docs/scaling.md: three brokers of examples/scaling/scoreboard.py on one Redis."""
    async with redis_server(persistent=True) as redis:
        brokers = []
        clients = []
        try:
            for _ in range(3):
                brokers.append(
                    await Broker.start(
                        "examples.scaling.scoreboard:root", "--port", "0", "--backplane", redis.url
                    )
                )
            roots, copies = [], []
            for broker in brokers:
                client = await pb.connect("127.0.0.1", broker.port)
                clients.append(client)
                roots.append(await client.getRootObject())
                copies.append(await roots[-1].callRemote("board"))
            assert len({await root.callRemote("pid") for root in roots}) == 3
            await roots[0].callRemote("score", 2, 1)
            for copy in copies:
                await copy.wait_until(lambda copy=copy: (copy.home, copy.away) == (2, 1))
            await copies[2]._pb_writer.callRemote("set", "comment", "what a match")
            for copy in copies[:2]:
                await copy.wait_until(lambda copy=copy: copy.comment == "what a match")
            with pytest.raises(pb.RemoteError, match="at most 200"):
                await copies[1]._pb_writer.callRemote("set", "comment", "!" * 201)
            assert all(copy.history[-1] == {"comment": "what a match"} for copy in copies[:2])
        finally:
            for client in clients:
                await client.close()
            for broker in brokers:
                assert await broker.stop() == 0
