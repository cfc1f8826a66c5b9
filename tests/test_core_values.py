"""datetime, date, time, timedelta and Decimal over a real loopback connection, both ways."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

import pbnb as pb
from pbnb.core.observing import _pack_for_everyone
from tests.cache_helpers import Waiting
from tests.core_net import connected, serving, within

KATHMANDU = timezone(timedelta(hours=5, minutes=45))
VALUES = [
    datetime(2024, 2, 29, 23, 59, 59, 999999),
    datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=KATHMANDU),
    datetime.min,
    date.max,
    time(23, 59, 59, 999999),
    time(7, 30, tzinfo=timezone(-timedelta(minutes=30))),
    timedelta(days=-1, microseconds=1),
    Decimal("-0"),
    Decimal("1E+999999"),
    Decimal("-sNaN7"),
]


def described(value: Any) -> tuple:
    """What must survive the trip: exact type, text, and the UTC offset of an aware value.

    Built the same way on each side, so comparing two descriptions compares the values.
    """
    offset = value.utcoffset() if isinstance(value, datetime | time) else None
    return type(value).__qualname__, str(value), offset


class Clerk(pb.Root):
    """Answers with what it received, and says what it saw on its side."""

    def remote_echo(self, value: Any) -> Any:
        return value

    def remote_seen(self, value: Any) -> tuple:
        return described(value)

    def remote_keyed(self, table: dict, members: set) -> tuple:
        return sorted(map(str, table)), sorted(map(described, members), key=str)

    def remote_now(self) -> datetime:
        return datetime.now(UTC)


async def test_each_value_arrives_with_its_type_both_ways():
    async with connected(Clerk()) as session:
        for value in VALUES:
            assert await within(session.root.callRemote("seen", value)) == described(value)
            assert described(await within(session.root.callRemote("echo", value))) == described(value)


async def test_values_as_dict_keys_set_members_and_inside_tuples():
    table = {date(2024, 1, 1): "new year", Decimal("0.10"): "ten cents", timedelta(hours=1): "an hour"}
    members = {datetime(2024, 1, 1, tzinfo=KATHMANDU), time(9), Decimal("Infinity")}
    async with connected(Clerk()) as session:
        keys, seen_members = await within(session.root.callRemote("keyed", table, members))
        assert keys == sorted(map(str, table))
        assert seen_members == sorted(map(described, members), key=str)
        echoed = await within(session.root.callRemote("echo", [table, members, (date.min, timedelta.max)]))
        assert echoed == [table, members, (date.min, timedelta.max)]
        assert [type(key) for key in echoed[0]] == [date, Decimal, timedelta]
        assert type(echoed[1]) is set and type(echoed[2]) is tuple


async def test_the_servers_now_arrives_aware_and_current():
    async with connected(Clerk()) as session:
        before = datetime.now(UTC)
        now = await within(session.root.callRemote("now"))
        after = datetime.now(UTC)
        assert type(now) is datetime and now.tzinfo is UTC
        assert before <= now <= after


async def test_a_subclass_is_refused_before_anything_is_sent():
    class Stamp(datetime):
        pass

    async with connected(Clerk()) as session:
        with pytest.raises(pb.SerializationError, match=r"cannot send a .*Stamp"):
            await within(session.root.callRemote("echo", Stamp(2024, 1, 1)))
        assert await within(session.root.callRemote("echo", Decimal("1"))) == Decimal("1")


class Ledger(pb.ObservedCacheable):
    observed_fields = ("opened", "balance", "entries")

    def __init__(self) -> None:
        self.opened = datetime(2024, 1, 1, 9, tzinfo=KATHMANDU)
        self.balance = Decimal("0.00")
        self.entries: list[tuple[date, Decimal]] = []


class LedgerCopy(Waiting, pb.ObservedRemoteCache):
    observed_fields = ("opened", "balance", "entries")

    def changed(self, fields: dict) -> None:
        self._wake()


pb.setUnjellyableForClass(Ledger, LedgerCopy)


class Bank(pb.Root):
    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def remote_ledger(self) -> Ledger:
        return self.ledger


async def test_cache_state_and_updates_carry_values_packed_once_for_every_peer():
    ledger = Ledger()
    async with serving(Bank(ledger)) as server:
        clients = [await pb.connect("127.0.0.1", server.port) for _ in range(2)]
        try:
            copies = [await within((await c.getRootObject()).callRemote("ledger")) for c in clients]
            assert [(c.opened, c.balance) for c in copies] == [(ledger.opened, Decimal("0.00"))] * 2
            assert copies[0].opened.utcoffset() == timedelta(hours=5, minutes=45)
            entries = [(date(2025, 6, 30), Decimal("10.05"))]
            change = {
                "balance": Decimal("10.05"),
                "opened": datetime(2025, 6, 30, tzinfo=UTC),
                "entries": entries,
            }
            # What update() broadcasts can be packed once for every peer (None would mean once each).
            assert _pack_for_everyone((change,), {}) is not None
            assert ledger.update(**change) == 2
            for copy in copies:
                await copy.wait_until(lambda copy=copy: copy.balance == Decimal("10.05"))
                assert str(copy.balance) == "10.05" and copy.opened == datetime(2025, 6, 30, tzinfo=UTC)
                assert copy.entries == entries and type(copy.entries[0][0]) is date
        finally:
            for client in clients:
                await client.close()
