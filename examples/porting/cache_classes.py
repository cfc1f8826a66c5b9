"""Port of Twisted's cache_classes.py: a pond whose copies follow it."""

import pbnb as pb


class DuckPond(pb.Cacheable):
    """The original: it tells every peer holding a copy about each change."""

    def __init__(self, ducks):
        self.observers = []
        self.ducks = ducks

    def count(self):
        print(f"I have [{len(self.ducks)}] ducks")

    def addDuck(self, duck):
        self.ducks.append(duck)
        for observer in self.observers:
            observer.callRemoteNoAnswer("addDuck", duck)

    def removeDuck(self, duck):
        self.ducks.remove(duck)
        for observer in self.observers:
            observer.callRemoteNoAnswer("removeDuck", duck)

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observers.append(observer)
        return self.ducks  # the copy needs the ducks, not our list of observers

    def stoppedObserving(self, perspective, observer):
        self.observers.remove(observer)


class DuckPondCache(pb.RemoteCache):
    """A peer's copy of a DuckPond."""

    def count(self):
        return len(self.cacheducks)

    def getDucks(self):
        return self.cacheducks

    def setCopyableState(self, state):
        print(" cache - sitting, er, setting ducks")
        self.cacheducks = state

    def observe_addDuck(self, duck):
        print(" cache - addDuck")
        self.cacheducks.append(duck)

    def observe_removeDuck(self, duck):
        print(" cache - removeDuck")
        self.cacheducks.remove(duck)


pb.setUnjellyableForClass(DuckPond, DuckPondCache)
