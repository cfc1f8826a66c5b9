"""What Twisted PB code relies on beyond calls: Failure idioms, cred names, stopping a server.

Everything runs over loopback with real sockets.
"""

from __future__ import annotations

import asyncio
import os
import textwrap

import pytest
from showcase_helpers import REPO, PbnbProcess

import pbnb as pb
from pbnb.cred import InMemoryPasswordChecker, IRealm, UsernamePassword


class OutOfStock(pb.Error):
    pass


class Backordered(OutOfStock, LookupError):
    pass


class Refund(pb.Error, pb.Copyable, pb.RemoteCopy):
    """An error registered as a copy: it arrives as itself."""


pb.setUnjellyableForClass(Refund, Refund)


class Shop(pb.Root):
    def __init__(self, supplier: pb.RemoteReference | None = None):
        self.supplier = supplier

    def remote_buy(self, item):
        raise Backordered(f"no {item} until Monday")

    def remote_lookup(self, key):
        return {}[key]

    def remote_refund(self):
        raise Refund("here is your money")

    async def remote_relay(self, key):
        return await self.supplier.callRemote("lookup", key)  # its RemoteError passes on as is


async def _call(root: pb.RemoteReference, name: str, *args) -> pb.RemoteError:
    with pytest.raises(pb.RemoteError) as caught:
        await root.callRemote(name, *args)
    return caught.value


async def test_remote_error_answers_as_a_failure_did():
    async with await pb.serve(Shop()) as server, await pb.connect("127.0.0.1", server.port) as client:
        root = await client.getRootObject()
        error = await _call(root, "buy", "tea")
        assert error.type == f"{__name__}.Backordered"
        assert error.value is error
        assert error.getErrorMessage() == "no tea until Monday"
        # Through the bases the server sent: its own classes, pbnb's and builtins.
        assert error.check(Backordered) is Backordered
        assert error.check(ValueError, OutOfStock, Backordered) is OutOfStock  # the first that matches
        assert error.check(LookupError) is LookupError
        assert error.check(pb.Error) is pb.Error
        assert error.check(Exception) is Exception
        assert error.check(f"{__name__}.OutOfStock") == f"{__name__}.OutOfStock"
        assert error.check(ValueError, KeyError) is None
        assert error.trap(KeyError, OutOfStock) is OutOfStock
        with pytest.raises(pb.RemoteError) as again:
            error.trap(ValueError)
        assert again.value is error

        missing = await _call(root, "nope")
        assert isinstance(missing, pb.NoSuchMethod)
        assert missing.trap(pb.NoSuchMethod) is pb.NoSuchMethod
        assert missing.check(pb.RemoteError) is pb.RemoteError

        with pytest.raises(Refund) as refund:  # `except DefinedError` for registered copies
            await root.callRemote("refund")
        assert refund.value.args == ("here is your money",)


async def test_a_relayed_remote_error_keeps_its_bases():
    async with await pb.serve(Shop()) as supplier_server:
        supplier_client = await pb.connect("127.0.0.1", supplier_server.port)
        supplier = await supplier_client.getRootObject()
        async with await pb.serve(Shop(supplier)) as server, await pb.connect("127.0.0.1", server.port) as c:
            error = await _call(await c.getRootObject(), "relay", "tea")
            assert error.type == "KeyError"
            assert error.check(LookupError) is LookupError
        await supplier_client.close()


async def test_porting_names():
    from pbnb import cred

    assert pb.portno == 8787
    for name in ("IPerspective", "Portal", "Anonymous", "IAnonymous", "ICredentials"):
        assert getattr(pb, name) is getattr(cred, name)
        assert name in pb.__all__


class Member(pb.Avatar):
    def __init__(self, name, mind):
        self.name, self.mind = name, mind

    async def perspective_greet_me(self):
        return await self.mind.callRemote("hear", f"hello {self.name}")


class Ear(pb.Referenceable):
    def remote_hear(self, text):
        return f"heard: {text}"


class Realm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        assert pb.IPerspective in interfaces
        return pb.IPerspective, Member(avatar_id, mind), lambda: None


def _portal(realm) -> pb.Portal:
    return pb.Portal(realm, [InMemoryPasswordChecker({"ada": "lovelace"})])


async def test_login_takes_the_mind_as_client():
    async with await pb.serve(_portal(Realm())) as server, await pb.connect("127.0.0.1", server.port) as c:
        avatar = await c.login(UsernamePassword("ada", "lovelace"), client=Ear())
        assert await avatar.callRemote("greet_me") == "heard: hello ada"
        with pytest.raises(TypeError, match="not both"):
            await c.login(UsernamePassword("ada", "lovelace"), Ear(), client=Ear())


async def test_a_realm_declared_with_zope_implementer_works():
    zope = pytest.importorskip("zope.interface")

    @zope.implementer(IRealm)
    class ZopeRealm(Realm):
        pass

    @zope.implementer(pb.IPerspective)
    class ZopeMember(Member):
        pass

    class ZopeMemberRealm(ZopeRealm):
        def requestAvatar(self, avatar_id, mind, *interfaces):
            return pb.IPerspective, ZopeMember(avatar_id, mind), lambda: None

    portal = _portal(ZopeMemberRealm())
    async with await pb.serve(portal) as server, await pb.connect("127.0.0.1", server.port) as c:
        avatar = await c.login(UsernamePassword("ada", "lovelace"), client=Ear())
        assert await avatar.callRemote("greet_me") == "heard: hello ada"


class Stoppable(pb.Root):
    def __init__(self):
        self.server: pb.Server | None = None

    def remote_shutdown(self):
        self.server.close()  # as reactor.stop() was called, without waiting
        return "bye"

    async def remote_shutdown_awaiting(self):
        await pb.current_server().close()
        return "bye for now"


@pytest.mark.parametrize("transport", ["tcp", "websocket"])
@pytest.mark.parametrize("method", ["shutdown", "shutdown_awaiting"])
async def test_a_remote_method_closes_its_server_and_still_answers(method, transport):
    root = Stoppable()
    server = root.server = await pb.serve(root)
    watcher = await pb.connect("127.0.0.1", server.port)  # another client: closed too
    if transport == "websocket":
        client = await pb.connect(f"ws://127.0.0.1:{server.port}/")
    else:
        client = await pb.connect("127.0.0.1", server.port)
    ref = await client.getRootObject()
    assert (await ref.callRemote(method)).startswith("bye")
    await asyncio.wait_for(server.serve_forever(), 30)  # returns: the server is closed
    await asyncio.wait_for(watcher.wait_closed(), 30)
    await asyncio.wait_for(client.wait_closed(), 30)
    assert not server.connections and not server.sockets
    with pytest.raises(pb.DeadReferenceError):
        await ref.callRemote("shutdown")
    await server.close()  # again: harmless


async def test_current_server_outside_a_remote_method():
    with pytest.raises(LookupError, match="inside a remote method"):
        pb.current_server()


async def test_python_m_pbnb_serve_exits_when_its_server_is_closed(tmp_path):
    (tmp_path / "stopping.py").write_text(
        textwrap.dedent(
            """
            import pbnb as pb

            class Stopping(pb.Root):
                def remote_shutdown(self):
                    pb.current_server().close()
                    return "stopping"

            root = Stopping()
            """
        )
    )
    process = await PbnbProcess.start(
        "serve", "stopping:root", "--port", "0", env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    )
    try:
        async with await pb.connect(process.host, process.port) as client:
            root = await client.getRootObject()
            assert await root.callRemote("shutdown") == "stopping"
        out, err = await asyncio.wait_for(process.process.communicate(), 30)
        assert process.process.returncode == 0, err.decode()
        assert "pbnb: stopped" in out.decode()
        assert "Traceback" not in err.decode()
    finally:
        await process.kill()


class Point:
    """A plain class, as jelly sent them once allowed."""

    def __init__(self, x, y):
        self.x, self.y = x, y


class Point3(Point):
    pass


class Geometry(pb.Root):
    def remote_mirror(self, point):
        assert type(point) is Point
        return Point(-point.x, -point.y)

    def remote_same(self, pair):
        return pair[0] is pair[1]


async def test_allow_instances_of_plain_classes_on_both_sides():
    both, server_only, nobody = pb.CopyRegistry(), pb.CopyRegistry(), pb.CopyRegistry()
    both.allowInstancesOf(Point)
    server_only.allowInstancesOf(Point)
    async with await pb.serve(Geometry(), registry=both) as server:
        async with await pb.connect("127.0.0.1", server.port, registry=both) as client:
            root = await client.getRootObject()
            mirrored = await root.callRemote("mirror", Point(1, 2))
            assert type(mirrored) is Point and (mirrored.x, mirrored.y) == (-1, -2)
            point = Point(3, 4)
            assert await root.callRemote("same", [point, point]) is True  # identity kept
            with pytest.raises(pb.InsecureJelly, match="Point3"):  # exactly the class, no subclass
                await root.callRemote("mirror", Point3(1, 2))
        async with await pb.connect("127.0.0.1", server.port, registry=nobody) as client:
            root = await client.getRootObject()
            with pytest.raises(pb.InsecureJelly, match="Point"):  # we did not allow sending it
                await root.callRemote("mirror", Point(1, 2))
    async with await pb.serve(Geometry(), registry=nobody) as server:
        async with await pb.connect("127.0.0.1", server.port, registry=server_only) as client:
            root = await client.getRootObject()
            with pytest.raises(pb.InsecureJelly, match="refused a copy"):  # the server did not allow it
                await root.callRemote("mirror", Point(1, 2))
            assert await root.callRemote("same", [1, 1]) is True  # and it keeps serving


def test_allow_instances_of_takes_plain_classes_only():
    registry = pb.CopyRegistry()
    for flavored in (pb.Referenceable, pb.Copyable, pb.RemoteCopy, int):
        with pytest.raises(TypeError):
            registry.allowInstancesOf(flavored)
    registry.allowInstancesOf(Point)
    registry.unregister(Point)
    assert registry.instance_name(Point) is None and registry.lookup(f"{__name__}.Point") is None
