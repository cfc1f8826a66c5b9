"""Errors over real loopback sockets: pb-behaviours.md items 23-26."""

from __future__ import annotations

import asyncio
import logging

import pytest
from core_net import connected, within

import pbnb as pb


class OutOfStock(pb.Error):
    """An expected failure: the server should not log it as a crash."""


class InsufficientFunds(pb.Error, pb.Copyable):
    def __init__(self, needed: int):
        super().__init__(f"need {needed} more")
        self.needed = needed


class RemoteInsufficientFunds(pb.RemoteCopy, Exception):
    pass


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("__str__ is broken")


class Shop(pb.Root):
    def remote_crash(self):
        raise ValueError("the shelf fell over")

    async def remote_crash_later(self):
        raise KeyError("missing")

    def remote_out_of_stock(self):
        raise OutOfStock("no more apples")

    def remote_pay(self, amount):
        raise InsufficientFunds(100 - amount)

    def remote_unsendable(self):
        return object()

    def remote_huge(self, size):
        raise ValueError("é" * size)

    def remote_deep(self, depth):
        if depth:
            return self.remote_deep(depth - 1)
        raise RuntimeError("bottom")

    def remote_unprintable(self):
        raise Unprintable()

    def _remote_private(self):
        return "private"


def allow_funds() -> pb.CopyRegistry:
    registry = pb.CopyRegistry()
    registry.register(InsufficientFunds, RemoteInsufficientFunds)
    return registry


@pytest.fixture
async def session():
    async with connected(Shop(), client_options={"registry": allow_funds()}) as session:
        yield session


async def test_remote_exception_has_type_name_and_message(session):
    """Behaviour 23: RemoteError carries the remote type and message, no traceback by default."""
    with pytest.raises(pb.RemoteError) as caught:
        await within(session.root.callRemote("crash"))
    error = caught.value
    assert error.remote_type == "ValueError"
    assert error.message == "the shelf fell over"
    assert str(error) == "ValueError: the shelf fell over"
    assert error.remote_traceback is None
    with pytest.raises(pb.RemoteError) as caught:
        await within(session.root.callRemote("crash_later"))
    assert caught.value.remote_type == "KeyError"
    with pytest.raises(pb.RemoteError) as caught:
        await within(session.root.callRemote("out_of_stock"))
    assert caught.value.remote_type == "test_core_errors.OutOfStock"


async def test_tracebacks_travel_only_when_the_server_allows():
    """Behaviour 23: with send_tracebacks=True the caller gets the server's traceback text."""
    async with connected(Shop(), server_options={"send_tracebacks": True}) as session:
        with pytest.raises(pb.RemoteError) as caught:
            await within(session.root.callRemote("crash"))
    text = caught.value.remote_traceback
    assert text.startswith("Traceback") and "remote_crash" in text and "the shelf fell over" in text


async def test_expected_errors_are_not_logged_as_crashes(session, caplog):
    """Behaviour 24: Error subclasses stay quiet; other exceptions are logged with a traceback."""
    caplog.set_level(logging.DEBUG, logger="pbnb")
    with pytest.raises(pb.RemoteError):
        await within(session.root.callRemote("out_of_stock"))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with pytest.raises(pb.RemoteError):
        await within(session.root.callRemote("crash"))
    (crash,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Shop.crash" in crash.getMessage()
    assert crash.exc_info is not None and crash.exc_info[0] is ValueError


async def test_async_crash_is_logged_too(session, caplog):
    """Behaviour 24 for ``async def`` methods."""
    with pytest.raises(pb.RemoteError):
        await within(session.root.callRemote("crash_later"))
    (crash,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert crash.exc_info[0] is KeyError


async def test_registered_exception_copy_arrives_as_itself(session):
    """Behaviour 25: an exception that is a Copyable arrives as its registered class."""
    with pytest.raises(RemoteInsufficientFunds) as caught:
        await within(session.root.callRemote("pay", 30))
    error = caught.value
    assert error.needed == 70
    assert error.args == ("need 70 more",)


async def test_unregistered_exception_copy_falls_back_to_remote_error():
    """Behaviour 25: without a registration the caller still gets type and message."""
    async with connected(Shop()) as session:
        with pytest.raises(pb.RemoteError) as caught:
            await within(session.root.callRemote("pay", 30))
    assert caught.value.remote_type == "test_core_errors.InsufficientFunds"
    assert "need 70 more" in caught.value.message


@pytest.mark.parametrize("name", ["missing", "_remote_private", "__init__"])
async def test_missing_method_raises_no_such_method(session, name):
    """Behaviour 26: NoSuchMethod on the caller, for unknown and non-remote names alike."""
    with pytest.raises(pb.NoSuchMethod) as caught:
        await within(session.root.callRemote(name))
    assert name in str(caught.value)
    assert isinstance(caught.value, pb.RemoteError)


async def test_a_name_that_is_not_an_identifier_fails_locally(session):
    with pytest.raises(ValueError, match="identifier"):
        await within(session.root.callRemote("crash.__globals__"))
    assert session.client.broker.pending_calls == 0


async def test_unsendable_answer_fails_the_call_with_serialization_error(session):
    """The server cannot encode its result: the caller learns why instead of waiting forever."""
    with pytest.raises(pb.SerializationError, match="cannot send"):
        await within(session.root.callRemote("unsendable"))
    with pytest.raises(pb.NoSuchMethod):
        await within(session.root.callRemote("nothing_here"))


async def test_a_huge_error_message_is_clipped_not_fatal():
    """An exception text larger than a frame header reaches the caller clipped; the connection lives."""
    async with connected(Shop(), server_options={"send_tracebacks": True}) as session:
        with pytest.raises(pb.RemoteError) as caught:
            await within(session.root.callRemote("huge", 200_000))
        assert caught.value.remote_type == "ValueError"
        assert caught.value.message.startswith("éé") and 1000 < len(caught.value.message) < 200_000
        with pytest.raises(pb.RemoteError) as caught:
            await within(session.root.callRemote("deep", 900))
        text = caught.value.remote_traceback
        assert "RuntimeError: bottom" in text  # the end of a long traceback is what matters
        assert session.client.connected and session.root.connected


async def test_an_exception_whose_str_fails_still_reaches_the_caller(session, caplog):
    with pytest.raises(pb.RemoteError) as caught:
        await within(session.root.callRemote("unprintable"))
    assert caught.value.remote_type == "test_core_errors.Unprintable"
    assert "str() failed" in caught.value.message
    with pytest.raises(pb.NoSuchMethod):
        await within(session.root.callRemote("still_connected"))


async def test_a_non_callable_remote_attribute_is_no_such_method():
    """Behaviour 26: only callables are remote methods; a data attribute with the prefix is not one."""

    class Holder(pb.Root):
        remote_answer = 42

    async with connected(Holder()) as session:
        with pytest.raises(pb.NoSuchMethod, match="answer"):
            await within(session.root.callRemote("answer"))


async def test_a_method_cancelled_on_its_own_side_reaches_the_caller_as_call_cancelled():
    """The server's task was cancelled by the server itself: the caller gets CallCancelled."""

    class Quitter(pb.Root):
        async def remote_quit(self):
            raise asyncio.CancelledError

    async with connected(Quitter()) as session:
        with pytest.raises(pb.CallCancelled):
            await within(session.root.callRemote("quit"))
