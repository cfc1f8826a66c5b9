"""Prints the reliability table of docs/reliability.md: a soak, then every limit, fault and attack.

    .venv/bin/python scripts/reliability.py            # the full run (1,000,000 soak calls)
    .venv/bin/python scripts/reliability.py --short    # 100,000 soak calls; every other row as is

The cases are functions in ``tests/reliability`` (the test suite runs each one
as a test, marked ``slow``). The exit status is non-zero if any row failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path[:0] = [
    str(Path(__file__).resolve().parent.parent / "tests"),
    str(Path(__file__).resolve().parent.parent),
]

from reliability import CASES, Row, soak  # noqa: E402


async def run(args: argparse.Namespace) -> list[Row]:
    def wanted(name: str) -> bool:
        return not args.only or any(word in name for word in args.only)

    rows: list[Row] = []
    if wanted("soak"):
        rows.append(await soak(args.calls, args.clients, args.processes))
        print(rows[-1].markdown(), file=sys.stderr, flush=True)
    for spec in CASES:
        if not wanted(spec.id):
            continue
        try:
            rows.append(await spec.run())
        except Exception as exc:  # a crashed case is a failed row, not a lost report
            rows.append(Row(spec.id, 0, 0, 0, None, 0, 0, 0, f"crashed: {exc!r}", False))
        print(rows[-1].markdown(), file=sys.stderr, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="a soak of 100,000 calls instead of 1,000,000")
    parser.add_argument("--calls", type=int, default=None, help="total soak calls")
    parser.add_argument("--clients", type=int, default=50, help="soak connections (default 50)")
    parser.add_argument("--processes", type=int, default=5, help="soak client processes (default 5)")
    parser.add_argument(
        "--only", nargs="+", metavar="WORD", help="run only the rows whose id contains a WORD"
    )
    args = parser.parse_args()
    if args.calls is None:
        args.calls = 100_000 if args.short else 1_000_000
    started = time.perf_counter()
    rows = asyncio.run(run(args))
    print(Row.HEADER)
    for row in rows:
        print(row.markdown())
    failed = [row.case for row in rows if not row.ok]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed in {time.perf_counter() - started:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
