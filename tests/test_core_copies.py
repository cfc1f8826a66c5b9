"""Copies over real loopback sockets: pb-behaviours.md items 14-17."""

from __future__ import annotations

import pytest
from core_net import connected, within

import pbnb as pb


class Card(pb.Copyable):
    def __init__(self, owner: str, secret: str):
        self.owner = owner
        self.secret = secret

    def getStateToCopyFor(self, perspective):
        # The owner sees the secret, everyone else a redacted copy.
        visible = perspective is not None and perspective.name == self.owner
        return {"owner": self.owner, "secret": self.secret if visible else None}


class RemoteCard(pb.RemoteCopy):
    init_calls = 0
    states: list = []

    def __init__(self):
        RemoteCard.init_calls += 1

    def setCopyableState(self, state):
        RemoteCard.states.append(dict(state))
        super().setCopyableState(state)


class Node(pb.Copyable):
    def __init__(self, label, link=None):
        self.label = label
        self.link = link


class RemoteNode(pb.RemoteCopy):
    pass


class Unregistered(pb.Copyable):
    def __init__(self):
        self.payload = "anything"


class Broken(pb.Copyable):
    def getStateToCopyFor(self, perspective):
        raise RuntimeError("cannot describe myself")


class Picky(pb.Copyable):
    def getStateToCopy(self):
        return ["not", "a", "dict"]


class RemotePicky(pb.RemoteCopy):
    pass  # the default setCopyableState wants a dict


def registry() -> pb.CopyRegistry:
    """Each side's allow-list, kept apart from the global one so tests stay independent."""
    allowed = pb.CopyRegistry()
    allowed.register(Card, RemoteCard)
    allowed.register(Node, RemoteNode)
    allowed.register(Picky, RemotePicky)
    return allowed


class User(pb.Avatar):
    def __init__(self, name):
        self.name = name

    def perspective_card(self, owner):
        return Card(owner, f"{owner}'s pin")


class Dealer(pb.Root):
    def __init__(self):
        self.received: list = []
        self.ran = False

    def remote_login(self, name):
        return User(name)

    def remote_card(self, owner):
        return Card(owner, "pin")

    def remote_take(self, value):
        self.ran = True
        self.received.append(value)
        return type(value).__name__

    def remote_unregistered(self):
        return Unregistered()

    def remote_broken(self):
        return [Broken()]

    def remote_picky(self):
        return Picky()

    def remote_echo(self, value):
        return value


@pytest.fixture
async def session():
    options = {"registry": registry()}
    async with connected(Dealer(), server_options=options, client_options=dict(options)) as session:
        yield session


async def test_copy_arrives_as_its_registered_class_without_init(session):
    """Behaviour 14: the RemoteCopy class, built without __init__, state via setCopyableState."""
    RemoteCard.init_calls = 0
    RemoteCard.states = []
    card = await within(session.root.callRemote("card", "ada"))
    assert type(card) is RemoteCard
    assert RemoteCard.init_calls == 0
    assert RemoteCard.states == [{"owner": "ada", "secret": None}]
    assert (card.owner, card.secret) == ("ada", None)


async def test_copy_as_an_argument_both_ways(session):
    """Behaviour 14: the client sends a copy; the server rebuilds it from its own registry."""
    assert await within(session.root.callRemote("take", Node("arg"))) == "RemoteNode"
    (node,) = session.server.root.received
    assert type(node) is RemoteNode and node.label == "arg"


async def test_cycles_and_sharing_through_copies(session):
    """Behaviour 4 with copies: two copies pointing at each other, shared twice."""
    a = Node("a")
    b = Node("b", a)
    a.link = b
    await within(session.root.callRemote("take", [a, b, a]))
    (got,) = session.server.root.received
    assert got[0] is got[2]
    assert got[0].link is got[1] and got[1].link is got[0]
    assert (got[0].label, got[1].label) == ("a", "b")


async def test_state_depends_on_the_receiving_perspective(session):
    """Behaviour 15: getStateToCopyFor(perspective) decides what each user sees."""
    ada = await within(session.root.callRemote("login", "ada"))
    bob = await within(session.root.callRemote("login", "bob"))
    own = await within(ada.callRemote("card", "ada"))
    other = await within(bob.callRemote("card", "ada"))
    anonymous = await within(session.root.callRemote("card", "ada"))
    assert own.secret == "ada's pin"
    assert other.secret is None
    assert anonymous.secret is None  # no login: the perspective is None


async def test_unregistered_copy_in_an_answer_fails_the_call(session):
    """Behaviour 16 (twisted#10910): InsecureJelly on the receiving side fails the call, no hang."""
    with pytest.raises(pb.InsecureJelly, match="Unregistered"):
        await within(session.root.callRemote("unregistered"))
    assert await within(session.root.callRemote("echo", 1)) == 1


async def test_unregistered_copy_in_arguments_fails_the_call(session):
    """Behaviour 16: the server refuses the arguments; the caller gets InsecureJelly."""
    dealer = session.server.root
    with pytest.raises(pb.InsecureJelly, match="Unregistered"):
        await within(session.root.callRemote("take", [Node("ok"), Unregistered()]))
    assert dealer.ran is False and dealer.received == []
    assert await within(session.root.callRemote("take", Node("later"))) == "RemoteNode"


async def test_copy_registered_only_on_the_sender_is_refused(session):
    """Behaviour 16: the receiver's allow-list decides, not the sender's."""
    server_allows_more = registry()
    server_allows_more.register(Unregistered, RemoteNode)
    async with connected(Dealer(), server_options={"registry": server_allows_more}) as other:
        # The server may receive one, but the default client registry knows no such class.
        assert await within(other.root.callRemote("take", Unregistered())) == "RemoteNode"
        with pytest.raises(pb.InsecureJelly):
            await within(other.root.callRemote("unregistered"))


async def test_get_state_failure_fails_the_caller_locally(session):
    """Behaviour 17: callRemote itself raises the exception (as in Twisted) and nothing is sent."""
    dealer = session.server.root
    with pytest.raises(RuntimeError, match="cannot describe myself"):
        session.root.callRemote("take", [Broken()])
    assert session.client.broker.pending_calls == 0
    assert await within(session.root.callRemote("echo", "still fine")) == "still fine"
    assert dealer.ran is False


async def test_get_state_failure_in_an_answer_fails_the_call(session):
    """Behaviour 17, other direction: the server cannot send its answer, the caller hears why."""
    with pytest.raises(pb.RemoteError, match="cannot describe myself") as caught:
        await within(session.root.callRemote("broken"))
    assert caught.value.remote_type == "RuntimeError"


async def test_set_unjellyable_for_class_registers_globally():
    """The module-level helper of design §2 fills the default registry."""

    class Note(pb.Copyable):
        def __init__(self, text):
            self.text = text

    class RemoteNote(pb.RemoteCopy):
        pass

    pb.setUnjellyableForClass(Note, RemoteNote)
    async with connected(Dealer()) as session:
        assert await within(session.root.callRemote("take", Note("hi"))) == "RemoteNote"
        (got,) = session.server.root.received
        assert got.text == "hi"


async def test_a_state_the_copy_refuses_fails_only_that_call(session):
    """A call whose answer cannot be rebuilt fails with that error; the connection lives on."""
    with pytest.raises(pb.ProtocolError, match="got a list state"):
        await within(session.root.callRemote("picky"))
    with pytest.raises(pb.ProtocolError, match="got a list state"):
        await within(session.root.callRemote("take", Picky()))
    assert session.server.root.received == []
    assert await within(session.root.callRemote("echo", "alive")) == "alive"
