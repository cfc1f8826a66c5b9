"""Numbers as a person reads them in a widget: digits grouped, no binary noise.

A float has about 15 significant decimal digits that survive a round trip
through binary: any number typed with up to 15 of them shows again exactly as
typed, while arithmetic noise (``0.1 + 0.2`` is ``0.30000000000000004``) goes
away. So numbers show with thousands separators and at most 15 significant
digits; the field keeps the exact value (``repr`` shows it).
"""

from __future__ import annotations

from typing import Any

_SIGNIFICANT = 15


def format_number(value: Any) -> str:
    """``1234567`` -> ``'1,234,567'``; ``0.1 + 0.2`` -> ``'0.3'``; ``2.0`` stays ``'2.0'`` (a float).

    Anything else (None in a field that allows it) shows as its repr.
    """
    if not isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, int):
        return f"{value:,}"
    text = f"{value:,.{_SIGNIFICANT}g}"
    if text.lstrip("-").replace(",", "").isdigit():
        text += ".0"  # a float reads as one
    return text


def parse_number(text: str, kind: type[int] | type[float]) -> int | float:
    """What a person typed into a number field: ``'1,500'``, ``'1_500'``, ``' 2e3 '`` for ``kind``.

    Raises ValueError, saying what was expected, for anything else (and for a
    fraction in a whole-number field).
    """
    plain = text.strip().replace(",", "").replace("_", "")
    try:
        if kind is int:
            try:
                return int(plain)
            except ValueError:
                whole = float(plain)  # '2e3' is a whole number too
                if not whole.is_integer():
                    raise
                return int(whole)
        return float(plain)
    except (ValueError, OverflowError):
        expected = "a whole number" if kind is int else "a number"
        raise ValueError(f"{text!r} is not {expected}") from None


def format_rate(per_second: float) -> str:
    """A rate for reading: ``61,728`` from 10 up, else two significant digits (``1.5``, ``0.25``)."""
    return format_number(round(per_second)) if per_second >= 10 else f"{per_second:.2g}"


def format_duration(seconds: float) -> str:
    """``'12 s'``, ``'3.5 min'``, ``'1.2 h'``: a time left or taken, to the precision a person needs."""
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
