"""Replicas of one shared cache through a real redis-server: order, exactly once, limits, bad entries."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import pytest
from backplane_helpers import TIMEOUT, Replica, Scoreboard, values
from redis_helpers import needs_redis, redis_server

import pbnb as pb
from pbnb.backplane import BackplaneUnavailable, connect
from pbnb.errors import ReadOnlyField

pytestmark = [pytest.mark.slow, needs_redis]  # a redis-server process per test


@pytest.fixture
async def redis():
    async with redis_server() as server:
        yield server


async def test_a_late_joiner_starts_from_the_shared_state(redis):
    first = await Replica.start(redis.url)
    try:
        first.board.update(home=2, away=1)
        first.board.note = "half time"
        (early,) = await first.observe()
        await early.wait_until(lambda: values(early) == (2, 1, "half time"))

        late = await Replica.start(redis.url)  # a new process, joining after the changes
        try:
            assert (late.board.home, late.board.away, late.board.note) == (2, 1, "half time")
            (copy,) = await late.observe()
            assert values(copy) == (2, 1, "half time") and copy.history == []
            late.board.away = 2
            await early.wait_until(lambda: early.away == 2)
            assert first.board.away == 2
            await copy.wait_until(lambda: copy.away == 2)
            assert copy.history == [{"away": 2}]
        finally:
            await late.close()
    finally:
        await first.close()


async def test_changes_from_every_process_reach_every_observer_once_in_one_order(redis):
    replicas = [await Replica.start(redis.url) for _ in range(3)]
    try:
        copies = [copy for replica in replicas for copy in await replica.observe(2)]
        # Interleaved writers on all three processes: assignments, updates, notifications.
        for round_ in range(30):
            for index, replica in enumerate(replicas):
                if index == 0:
                    replica.board.home = round_
                elif index == 1:
                    replica.board.update(away=round_, note=f"r{round_}")
                else:
                    replica.board.notify("whistle", minute=round_)
        expected = 90
        for copy in copies:
            await copy.wait_until(lambda copy=copy: len(copy.history) >= expected)
        # A round trip on each connection is a barrier: nothing more is on its way.
        for replica in replicas:
            for client in replica.clients:
                await (await client.getRootObject()).callRemote("board")
        first = copies[0].history
        assert len(first) == expected
        for copy in copies[1:]:
            assert copy.history == first  # one order, each change once
        # Each process's own changes keep the order it made them in.
        assert [h["home"] for h in first if isinstance(h, dict) and "home" in h] == list(range(30))
        assert [h[1] for h in first if isinstance(h, tuple)] == list(range(30))
        for replica in replicas:
            assert (replica.board.home, replica.board.away, replica.board.note) == (29, 29, "r29")
    finally:
        for replica in replicas:
            await replica.close()


async def test_a_client_writes_through_any_broker_and_every_observer_follows(redis):
    owner, other = await Replica.start(redis.url), await Replica.start(redis.url)
    try:
        (watcher,) = await owner.observe()
        writer, neighbour = await other.observe(2)
        await writer._pb_writer.callRemote("set", "home", 5)
        await watcher.wait_until(lambda: watcher.home == 5)
        await neighbour.wait_until(lambda: neighbour.home == 5)
        assert owner.board.home == 5 and other.board.home == 5
        # The writer shows its value already: it is not echoed back to it...
        await writer._pb_writer.callRemote("set", "note", "  padded  ")
        await watcher.wait_until(lambda: watcher.note == "padded")
        # ...unless the owner's accept_write changed it.
        await writer.wait_until(lambda: writer.note == "padded")
        assert writer.history == [{"note": "padded"}]
        assert watcher.history == [{"home": 5}, {"note": "padded"}]
        with pytest.raises(pb.RemoteError) as refused:
            await writer._pb_writer.callRemote("set", "away", 9)
        assert refused.value.remote_type == f"{ReadOnlyField.__module__}.ReadOnlyField"
        assert owner.board.away == 0
    finally:
        await other.close()
        await owner.close()


async def test_a_change_too_large_is_refused_where_it_is_made(redis):
    owner = await Replica.start(redis.url, max_change=1000)
    other = await Replica.start(redis.url, max_change=1000)
    try:
        (copy,) = await other.observe()
        (writer,) = await owner.observe()
        with pytest.raises(pb.LimitExceeded, match="max_change"):
            owner.board.note = "x" * 2000
        assert owner.board.note == ""  # not even here
        with pytest.raises(pb.LimitExceeded):
            owner.board.update(home=1, note="y" * 2000)
        assert owner.board.home == 0
        with pytest.raises(pb.LimitExceeded, match="max_change"):  # a peer's write, refused on its broker
            await writer._pb_writer.callRemote("set", "note", "z" * 2000)
        assert owner.board.note == ""
        with pytest.raises(pb.SerializationError, match="plain data"):
            owner.board.note = pb.Referenceable()
        assert owner.board.note == ""
        owner.board.home = 1
        await copy.wait_until(lambda: copy.home == 1)
        assert copy.history == [{"home": 1}]  # the refused changes reached nobody
    finally:
        await other.close()
        await owner.close()


async def test_per_perspective_notifications_are_refused_once_shared(redis):
    replica = await Replica.start(redis.url)
    try:
        with pytest.raises(TypeError, match="notify_each"):
            replica.board.notify_each("whistle", lambda perspective: ((1,), {}))
    finally:
        await replica.close()
    # Detached again, it is an ordinary cache of one process.
    assert replica.board.shared_name is None
    assert replica.board.notify_each("whistle", lambda perspective: ((1,), {})) == 0


async def test_malformed_and_foreign_entries_are_logged_and_skipped(redis, caplog):
    import redis.asyncio as aioredis

    replica = await Replica.start(redis.url)
    raw = aioredis.from_url(redis.url)
    try:
        (copy,) = await replica.observe()
        epoch = await raw.hget("pbnb:{board}:state", "epoch")
        log_key = "pbnb:{board}:log"
        reference = b"\xc7\x08\x11" + bytes(8)  # ext 17, a connection's object: never plain data
        garbage = [
            {"hello": "world"},  # not ours at all
            {"e": "another-epoch", "n": 1, "o": "x:1", "m": "set", "a": b"\x92\x92\xa4home\x07\x80"},
            {"e": epoch, "o": "x:1", "m": "set", "a": b"\x92\x92\xa4home\x07\x80"},  # no number
            {"e": epoch, "n": 1, "o": "x:1", "m": "set", "a": b"\xc1"},  # not msgpack
            {"e": epoch, "n": 1, "o": "x:1", "m": "set", "a": b"\x92\x92\xa6secret\x07\x80"},  # unknown field
            {"e": epoch, "n": 1, "o": "x:1", "m": "_private", "a": b"\x92\x90\x80"},
            {"e": epoch, "n": 1, "o": "x:1", "m": "set", "a": b"\x92\x92\xa4home" + reference + b"\x80"},
        ]
        with caplog.at_level(logging.WARNING, logger="pbnb.backplane"):
            for fields in garbage:
                await raw.xadd(log_key, fields)
            replica.board.home = 3  # the first real change after the garbage
            await copy.wait_until(lambda: copy.home == 3)
        assert copy.history == [{"home": 3}]
        skipped = [record for record in caplog.records if "skipped log entry" in record.getMessage()]
        assert len(skipped) == len(garbage)
        assert replica.board.home == 3 and replica.backplane.in_step("board")
    finally:
        await raw.aclose()
        await replica.close()


async def test_redis_down_at_start_is_a_clear_error():
    async with redis_server(password="s3cret") as server:
        wrong = server.url.replace("s3cret", "wrong")
        with pytest.raises(BackplaneUnavailable, match="cannot reach Redis") as bad_password:
            await connect(wrong, objects={"board": Scoreboard()})
        assert "wrong" not in str(bad_password.value) and "***" in str(bad_password.value)
        port = server.port
    # The server is gone now: nothing listens on its port.
    with pytest.raises(BackplaneUnavailable, match=f"cannot reach Redis at redis://127.0.0.1:{port}/0"):
        await asyncio.wait_for(connect(f"redis://127.0.0.1:{port}/0", timeout=5), TIMEOUT)
    with pytest.raises(ValueError, match="not a Redis URL"):
        await connect("http://127.0.0.1:1/0")


def test_importing_pbnb_and_the_backplane_does_not_import_redis():
    code = "import sys, pbnb, pbnb.backplane; print('redis' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


async def test_a_writer_racing_other_processes_ends_with_everyone_else(redis):
    """A peer's write is not echoed back to it, unless another change to that field came in between."""
    owner, other = await Replica.start(redis.url), await Replica.start(redis.url)
    try:
        (watcher,) = await owner.observe()
        (writer,) = await other.observe()
        calls = []
        for round_ in range(40):
            # The writer's copy shows its own value at once (as a TraitCache does) and
            # sends it; meanwhile the owner's code assigns the same field.
            writer.__dict__["home"] = 1000 + round_
            calls.append(writer._pb_writer.callRemote("set", "home", 1000 + round_))
            owner.board.home = round_
            await asyncio.sleep(0)
        await asyncio.gather(*calls)
        await owner.backplane.flush()
        await other.backplane.flush()
        # Every write above is in the log now; this change comes after all of them.
        owner.board.away = 10_000
        await writer.wait_until(lambda: writer.away == 10_000)
        await watcher.wait_until(lambda: watcher.away == 10_000)
        await asyncio.wait_for(other.backplane.flush(), TIMEOUT)
        assert writer.home == watcher.home == other.board.home == owner.board.home
    finally:
        await other.close()
        await owner.close()


async def test_an_object_shared_at_run_time_is_attached_to_the_running_backplane(redis):
    from pbnb.backplane import registered, share

    assert registered() == {}  # nothing else in this test process marks objects
    following = await connect(redis.url)  # follows whatever share() marks
    other = await Replica.start(redis.url, name="room-7")
    try:
        (copy,) = await other.observe()
        room = share(Scoreboard(), "room-7")  # a room opened while serving
        assert room.shared_name == "room-7"
        room.note = "opened"  # shared at once: it waits for the room's state to load
        await copy.wait_until(lambda: copy.note == "opened")
        assert following.in_step("room-7")
    finally:
        await other.close()
        await following.close()
        from pbnb.backplane import shared

        shared._registered.pop("room-7", None)
