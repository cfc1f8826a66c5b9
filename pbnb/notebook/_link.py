"""``link``: ``widgets.link`` for a live copy's field, which never shows a value that is not there.

A plain link between a ``TraitCache`` field and a slider goes quietly wrong in
three ways: a value outside the slider's range is clamped, so the slider shows
another number (and the next drag writes from it); a write the owner refuses,
or that a dead connection cannot carry, leaves the slider where it was dragged;
and a dead copy's slider still moves. This link disables the widget and says
why whenever it cannot show the copy's value, snaps the widget back when the
copy keeps its value, and disables it while the copy is disconnected.
"""

from __future__ import annotations

from typing import Any

import traitlets


class link(traitlets.link):  # lower case, like the widgets.link it replaces
    """Link a copy's field to a widget both ways: ``link((cache, "value"), (slider, "value"))``.

    The source is the copy (anything with traits; a ``TraitCache`` also gets
    its connection state followed), the target the widget.
    """

    def __init__(self, source: Any, target: Any, transform: Any = None):
        self.fits = True
        widget = target[0]
        self._owns_disabled = widget.has_trait("disabled") and not widget.disabled
        super().__init__(source, target, transform)
        copy = source[0]
        if copy.has_trait("pb_state"):
            copy.observe(self._sync_enabled, names="pb_state")
        self._sync_enabled()

    def link(self) -> None:
        """Show the copy's value on the widget, then follow both ways."""
        try:
            with self._busy_updating():
                self._show(getattr(self.source[0], self.source[1]))
        finally:
            self.source[0].observe(self._update_target, names=self.source[1])
            self.target[0].observe(self._update_source, names=self.target[1])

    def unlink(self) -> None:
        """Stop following (the widget keeps its state, enabled or not)."""
        super().unlink()
        copy = self.source[0]
        if copy.has_trait("pb_state"):
            copy.unobserve(self._sync_enabled, names="pb_state")

    def _update_target(self, change: Any) -> None:
        if self.updating:
            return
        with self._busy_updating():
            self._show(change.new)

    def _update_source(self, change: Any) -> None:
        if self.updating:
            return
        copy, name = self.source
        with self._busy_updating():
            try:
                wanted = self._transform_inv(change.new)
            except ValueError as exc:  # text that does not read as a value (a number field)
                if copy.has_trait("pb_problem"):
                    copy.set_trait("pb_problem", f"{name}: {exc}; it keeps {getattr(copy, name)!r}")
            else:
                try:
                    setattr(copy, name, wanted)
                except Exception:
                    # The copy kept its value and said why (a TraitCache's pb_problem);
                    # a write from a cell raises, but nobody would see it from a widget.
                    pass
            # The widget shows the copy's value as the widget shows it: a refused write
            # snaps back, and typed text ('1500') comes back formatted ('1,500').
            kept = getattr(copy, name)
            if self._transform(kept) != change.new:
                self._show(kept)

    def _show(self, value: Any) -> None:
        """Put ``value`` on the widget, or disable the widget if it would show something else."""
        widget, attribute = self.target
        wanted = self._transform(value)
        try:
            setattr(widget, attribute, wanted)
            shown = getattr(widget, attribute)
            fits = bool(shown == wanted)
        except traitlets.TraitError:
            shown, fits = getattr(widget, attribute), False
        if fits != self.fits or not fits:
            self.fits = fits
            self._sync_enabled()
        problem = (
            ""
            if fits
            else (
                f"{self.source[1]} is {value!r}, which this {type(widget).__name__} cannot show "
                f"(it would show {shown!r}); it is disabled until the value fits"
            )
        )
        if widget.has_trait("tooltip"):
            widget.tooltip = problem or None
        copy = self.source[0]
        if copy.has_trait("pb_problem") and (problem or copy.pb_problem.startswith(f"{self.source[1]} is ")):
            copy.set_trait("pb_problem", problem)

    def _sync_enabled(self, _change: Any = None) -> None:
        if not self._owns_disabled:
            return
        copy = self.source[0]
        live = not copy.has_trait("pb_state") or copy.pb_state == "live"
        self.target[0].disabled = not (live and self.fits)
