"""Port of Twisted's trap_server.py: serve it with ``python -m pbnb serve trap_server:root``."""

import pbnb as pb


class MyException(pb.Error):
    pass


class MyOtherException(pb.Error):
    pass


class One(pb.Root):
    def remote_fooMethod(self, value):
        if value == "panic!":
            raise MyException("panic!")
        return "response"

    def remote_shutdown(self):
        pb.current_server().close()  # reactor.stop(): the answer still goes out


root = One()
