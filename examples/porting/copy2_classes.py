"""Port of Twisted's copy2_classes.py: the sender chooses the state, the receiver rebuilds it."""

import pbnb as pb


class FrogPond:
    def __init__(self, frogs, toads):
        self.numFrogs = frogs
        self.numToads = toads

    def count(self):
        return self.numFrogs + self.numToads


class SenderPond(FrogPond, pb.Copyable):
    def getStateToCopy(self):
        state = dict(self.__dict__)
        state["frogsAndToads"] = state.pop("numFrogs") + state.pop("numToads")
        return state


class ReceiverPond(pb.RemoteCopy):
    def setCopyableState(self, state):
        self.__dict__ = state

    def count(self):
        return self.frogsAndToads


pb.setUnjellyableForClass(SenderPond, ReceiverPond)
