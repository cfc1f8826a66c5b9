"""Losing Redis, or a broker process, and coming back: nothing lost, repeated or reordered.

A real redis-server is killed (SIGKILL) and started again on the same port,
with its data kept (append-only file) or lost; broker processes are stopped
(SIGSTOP) past the log's history, or killed mid-update.
"""

from __future__ import annotations

import logging
import os
import signal

import msgpack
import pytest
from backplane_helpers import TARGET, Broker, RecordingCopy, Replica
from redis_helpers import needs_redis, redis_server

import pbnb as pb
from pbnb.backplane import SharedCacheable, connect

pytestmark = [pytest.mark.slow, needs_redis]  # a redis-server process per test


def numbers(copy: RecordingCopy, field: str = "home") -> list:
    return [change[field] for change in copy.history if isinstance(change, dict) and field in change]


async def test_redis_restarting_with_its_data_loses_and_repeats_nothing(caplog):
    async with redis_server(persistent=True) as redis:
        owner, other = await Replica.start(redis.url), await Replica.start(redis.url)
        try:
            copies = await owner.observe(2) + await other.observe(2)
            for value in range(1, 11):
                owner.board.home = value
            await copies[-1].wait_until(lambda: copies[-1].home == 10)
            with caplog.at_level(logging.WARNING, logger="pbnb.backplane"):
                await redis.kill()
                for value in range(11, 31):  # made while Redis is away: they wait, in order
                    owner.board.home = value
                other.board.note = "written on the other process meanwhile"
                assert owner.board.home == 30  # the owner reads its own writes at once
                await redis.start()
                for copy in copies:
                    await copy.wait_until(lambda copy=copy: copy.home == 30 and copy.note != "")
            for copy in copies:
                assert numbers(copy) == list(range(1, 31))  # each once, in order, none lost
                assert copy.history == copies[0].history  # one order for every observer
            assert any("lost Redis" in record.getMessage() for record in caplog.records)
            assert any("Redis is back" in record.getMessage() for record in caplog.records)
        finally:
            await other.close()
            await owner.close()


async def test_redis_restarting_empty_leaves_every_observer_with_the_owners_state():
    async with redis_server(persistent=False) as redis:
        owner, other = await Replica.start(redis.url), await Replica.start(redis.url)
        try:
            copies = await owner.observe(2) + await other.observe(2)
            owner.board.update(home=1, away=1)
            await copies[-1].wait_until(lambda: copies[-1].away == 1)
            await redis.kill()
            owner.board.update(home=7, away=3)  # the owner's latest state, made while Redis is away
            await redis.start()  # with nothing in it: a new history starts
            for copy in copies:
                await copy.wait_until(lambda copy=copy: (copy.home, copy.away) == (7, 3))
                homes = numbers(copy)
                assert homes == sorted(homes) and len(homes) == len(set(homes))  # never backwards
            assert (other.board.home, other.board.away) == (7, 3)
            # Redis holds it again, for the next process to join.
            late = await Replica.start(redis.url)
            try:
                assert (late.board.home, late.board.away) == (7, 3)
            finally:
                await late.close()
        finally:
            await other.close()
            await owner.close()


class Counter(SharedCacheable):
    """The same fields as the counter the broker subprocesses share."""

    observed_fields = ("value", "label")
    writable_fields = ("label",)

    def __init__(self) -> None:
        self.value = 0
        self.label = ""


async def test_a_process_away_longer_than_the_history_catches_up_from_the_snapshot():
    async with redis_server() as redis:
        away = await Broker.start(TARGET, "--port", "0", "--backplane", redis.url, "--backplane-history", "5")
        owner = Counter()
        backplane = await connect(redis.url, objects={"counter": owner}, history=5)
        client = await pb.connect("127.0.0.1", away.port)
        try:
            copy = await (await client.getRootObject()).callRemote("counter")
            owner.value = 1
            await copy.wait_until(lambda: copy.value == 1)
            away.process.send_signal(signal.SIGSTOP)  # the broker stops reading; its clients wait
            for value in range(2, 1001):
                owner.value = value  # far more than the log keeps
            await backplane.flush()
            # The log keeps about 5 entries (whole blocks of 100): far fewer than were made.
            assert int(await backplane.redis.xlen("pbnb:{counter}:log")) < 900
            last = owner.value
            away.process.send_signal(signal.SIGCONT)
            await copy.wait_until(lambda: copy.value == last)
            seen = numbers(copy, "value")
            assert seen == sorted(seen) and len(seen) == len(set(seen)) and len(seen) < last
        finally:
            await client.close()
            await backplane.close()
            away.process.send_signal(signal.SIGCONT)
            assert await away.stop() == 0
        assert "loading the snapshot" in away.stderr


async def test_a_broker_killed_mid_update_leaves_the_survivors_in_step():
    async with redis_server() as redis:
        doomed = await Broker.start(TARGET, "--port", "0", "--backplane", redis.url)
        survivor = Counter()
        backplane = await connect(redis.url, objects={"counter": survivor})
        server = await pb.serve(SurvivorRoot(survivor), port=0)
        client = await pb.connect("127.0.0.1", server.port)
        writer = await pb.connect("127.0.0.1", doomed.port)
        try:
            copy = await (await client.getRootObject()).callRemote("counter")
            writer_root = await writer.getRootObject()
            await writer_root.callRemote("count_to", 20_000)
            await copy.wait_until(lambda: copy.value > 0)
            os.kill(doomed.process.pid, signal.SIGKILL)  # most likely with changes still on their way
            await doomed.process.wait()
            final = msgpack.unpackb(await backplane.redis.hget("pbnb:{counter}:state", "f:value"))
            assert final > 0
            await copy.wait_until(lambda: copy.value == final)
            # What reached Redis reached the survivor's observers: every value once, in order.
            assert numbers(copy, "value") == list(range(1, final + 1))
            assert survivor.value == final
        finally:
            await writer.close()
            await client.close()
            await server.close()
            await backplane.close()
            await doomed.stop()


class SurvivorRoot(pb.Root):
    def __init__(self, counter: Counter):
        self.counter = counter

    def remote_counter(self) -> Counter:
        return self.counter


pb.setUnjellyableForClass(Counter, RecordingCopy)
