"""Port of Twisted's pbecho.py: serve it with ``python -m pbnb serve pbecho:portal``.

The realm keeps zope's ``@implementer(IRealm)`` from the original when
zope.interface is installed; pbnb itself does not need it.
"""

import pbnb as pb
from pbnb.cred import InMemoryPasswordChecker, IRealm

try:
    from zope.interface import implementer
except ImportError:  # pbnb does not depend on zope

    def implementer(*interfaces):
        return lambda cls: cls


class DefinedError(pb.Error):
    pass


class SimplePerspective(pb.Avatar):
    def perspective_echo(self, text):
        print("echoing", text)
        return text

    def perspective_error(self):
        raise DefinedError("exception!")

    def logout(self):
        print(self, "logged out")


@implementer(IRealm)
class SimpleRealm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("no interface")
        avatar = SimplePerspective()
        return pb.IPerspective, avatar, avatar.logout


checker = InMemoryPasswordChecker()
checker.addUser("guest", "guest")
portal = pb.Portal(SimpleRealm())
portal.registerChecker(checker)
