"""Port of Twisted's copy_receiver.tac: serve it with ``python -m pbnb serve copy_receiver:root``."""

from copy_sender import CopyPond, LilyPond

import pbnb as pb


class ReceiverPond(pb.RemoteCopy, LilyPond):
    pass


pb.setUnjellyableForClass(CopyPond, ReceiverPond)


class Receiver(pb.Root):
    def remote_takePond(self, pond):
        print(" got pond:", pond)
        pond.countFrogs()
        return "safe and sound"  # the sender's acknowledgement

    def remote_shutdown(self):
        pb.current_server().close()


root = Receiver()
