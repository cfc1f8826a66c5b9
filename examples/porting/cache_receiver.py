"""Port of Twisted's cache_receiver.py: serve it with ``python -m pbnb serve cache_receiver:root``."""

import cache_classes  # noqa: F401  (registers DuckPondCache for DuckPond)

import pbnb as pb


class Receiver(pb.Root):
    def remote_takePond(self, pond):
        self.pond = pond
        print("got pond:", pond)
        self.remote_checkDucks()

    def remote_checkDucks(self):
        print(f"[{self.pond.count()}] ducks: ", self.pond.getDucks())

    def remote_ignorePond(self):
        print("dropping pond")
        self.pond = None  # our last copy goes: the owner's stoppedObserving runs

    def remote_shutdown(self):
        pb.current_server().close()


root = Receiver()
