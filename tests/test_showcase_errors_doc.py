"""The error list in docs/concepts.md names every exception class pbnb defines."""

import inspect
from pathlib import Path

import pbnb.cred
import pbnb.errors

CONCEPTS = Path(__file__).resolve().parent.parent / "docs" / "concepts.md"


def test_every_error_class_is_in_the_concepts_error_list():
    text = CONCEPTS.read_text()
    classes = [
        obj
        for module in (pbnb.errors, pbnb.cred)
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__.startswith("pbnb")
    ]
    assert len(classes) >= 12
    listed = {name.rsplit(".", 1)[-1] for name in text.split("`")[1::2]}
    missing = sorted({cls.__name__ for cls in classes} - listed)
    assert not missing, f"docs/concepts.md does not list {missing}"
