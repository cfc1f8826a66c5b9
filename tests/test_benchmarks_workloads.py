"""The network benchmark's echo workloads: every peer echoes every shape, and a fake echo is caught."""

from __future__ import annotations

import copy
import importlib

import pytest

from benchmarks.harness import PEERS, _Measurer
from benchmarks.run import TARGETS, PeerProcesses
from benchmarks.workloads import ECHOES, LISTS, TREE, TUPLES, WORKLOADS, check_echo, tuples_as_lists

#: What a peer cannot do at all, as the benchmark reports it (a refusal, not a wrong echo).
REFUSED = {
    ("twisted_peer", "mib"): "BananaError",
    ("twisted_peer", "datetimes"): "can't jelly datetime objects with tzinfo",
    ("pyro_peer", "datetimes"): "cannot serialize datetime with timezone info",
}


class _NotAList(list):
    """Equal to what was sent, but not the value itself (as an RPyC netref would be)."""


class _EqualToAnything:
    def __eq__(self, other: object) -> bool:
        return True


def _tree_with_one_leaf_changed() -> dict:
    tree = copy.deepcopy(TREE)
    tree["group 9"]["item 9"]["label"] = "9.8"
    return tree


@pytest.mark.parametrize(
    ("workload", "echoed"),
    [
        ("tuples", tuples_as_lists(TUPLES)),  # a transport that loses tuples
        ("tuples", TUPLES[:-1]),  # one item short
        ("lists", _NotAList(LISTS)),  # compares equal, another type
        ("lists", [tuple(item) for item in LISTS]),  # lists turned into tuples
        ("tree", _tree_with_one_leaf_changed()),
        ("nested", _EqualToAnything()),
        ("mib", bytes(len(ECHOES["mib"]))),
    ],
    ids=["tuples-as-lists", "tuples-short", "list-subclass", "lists-as-tuples", "tree-leaf", "eq", "zeros"],
)
def test_a_fake_echo_is_caught(workload, echoed):
    with pytest.raises(AssertionError, match=f"echo of {workload} came back different"):
        check_echo(workload, echoed)


def test_a_peer_without_tuples_must_give_the_same_items_back_as_lists_and_says_so():
    assert check_echo("tuples", tuples_as_lists(TUPLES), carries_tuples=False) == "tuples arrived as lists"
    assert check_echo("tree", copy.deepcopy(TREE), carries_tuples=False) is None  # nothing lost there
    with pytest.raises(AssertionError):
        check_echo("tuples", TUPLES[:-1], carries_tuples=False)


def test_every_network_workload_has_a_target():
    assert TARGETS.keys() == WORKLOADS.keys()
    assert set(ECHOES) <= set(WORKLOADS)


class _FakeClient:
    """A benchmark client that answers with lists where tuples were sent."""

    def echoes(self, value: object, count: int) -> tuple[float, object]:
        return 0.01, tuples_as_lists(value)


def test_the_harness_reports_a_wrong_echo_as_an_error_not_a_rate():
    measurer = _Measurer(_FakeClient(), lambda work, *args: work(*args), carries_tuples=True)
    answer = measurer.handle({"workload": "tuples", "budget": 0.05})
    assert answer.keys() == {"error"}
    assert answer["error"].startswith("AssertionError: echo of tuples came back different")
    assert "rate" in measurer.handle({"workload": "lists", "budget": 0.05})


@pytest.fixture(scope="module", params=PEERS)
def peer(request):
    processes = PeerProcesses(request.param, pin=False)
    try:
        yield processes
    finally:
        processes.close()


@pytest.mark.slow
def test_every_peer_echoes_every_shape_between_processes(peer):
    carries_tuples = getattr(importlib.import_module(f"benchmarks.{peer.name}"), "CARRIES_TUPLES", True)
    for workload in ECHOES:
        answer = peer.measure(workload, 0.01)
        if (peer.name, workload) in REFUSED:
            assert REFUSED[peer.name, workload] in answer["error"]
            continue
        assert answer.get("rate", 0) > 0, (workload, answer)
        lost_tuples = workload == "tuples" and not carries_tuples
        assert answer.get("note") == ("tuples arrived as lists" if lost_tuples else None), workload
