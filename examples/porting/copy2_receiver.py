"""Port of Twisted's copy2_receiver.py: serve it with ``python -m pbnb serve copy2_receiver:root``."""

import copy2_classes  # noqa: F401  (registers ReceiverPond for SenderPond)

import pbnb as pb


class Receiver(pb.Root):
    def remote_takePond(self, pond):
        print(" got pond:", pond)
        print(f" count {pond.count()}")
        return "safe and sound"

    def remote_shutdown(self):
        pb.current_server().close()


root = Receiver()
