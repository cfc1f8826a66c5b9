"""Every row of the reliability table (docs/reliability.md) as its own test.

The cases live in ``tests/reliability``; ``scripts/reliability.py`` runs the
same functions (with a ten times longer soak) to print the table. A row fails
with its own description, so a failure names the case and what went wrong.
The rows that take seconds or other processes are marked ``slow``; the quick
ones, which include the regression tests of issue 20, run in the fast core.
"""

from __future__ import annotations

import pytest
from reliability import CASES, soak


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_soak():
    row = await soak(calls=100_000)
    assert row.ok, row.markdown()
    assert "0 wrong, 0 client errors" in row.result
    assert "0 entries, 0 Items alive, 0 cache observers" in row.result


@pytest.mark.parametrize(
    "case", [pytest.param(spec.run, marks=[pytest.mark.slow] * spec.slow, id=spec.id) for spec in CASES]
)
async def test_row(case):
    row = await case()
    assert row.ok, row.markdown()
