"""The N+1 detector of a unit of work.

A relationship loaded for one parent object at a time (``await
obj.awaitable_attrs.rel`` in a loop, ``lazyload`` or ``immediateload``
options) costs one statement per parent row instead of one for them all. The
detector listens to one session's ORM executions and reports when the same
``Class.attribute`` is loaded for a second distinct parent within the unit of
work. Loading a relationship of a single object is tolerated: that is one
statement, not N+1. The same parent loaded twice counts once.

Modes: ``"raise"`` raises `LazyLoadDetected` from the offending load, before
its statement is sent, and from every later one; ``"warn"`` emits one
`NPlusOneWarning` per attribute per unit of work and lets the loads run.
Reports name the attribute and the calling file and line.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from typing import Literal

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session

from harbordb.errors import ConfigurationError, LazyLoadDetected, NPlusOneWarning
from harbordb.querycount import caller_location, relationship_attribute

NPlusOneMode = Literal["raise", "warn"]
NPLUSONE_MODES: tuple[NPlusOneMode, ...] = ("raise", "warn")

# A relationship loaded for this many distinct parents in one unit of work is N+1.
THRESHOLD = 2


def parse_nplusone_mode(value: str | None) -> NPlusOneMode | None:
    """Read a mode from configuration (``HARBORDB_NPLUSONE``): raise, warn, or off."""
    if value is None or value.strip().lower() in {"", "off", "none", "0", "false"}:
        return None
    mode = value.strip().lower()
    if mode not in NPLUSONE_MODES:
        raise ConfigurationError(f"nplusone must be 'raise', 'warn' or 'off'; got {value!r}")
    return mode


class NPlusOneDetector:
    """Watches one session; `attach` when the unit of work starts, `detach` at its end."""

    def __init__(self, mode: NPlusOneMode) -> None:
        if mode not in NPLUSONE_MODES:
            raise ConfigurationError(f"nplusone must be 'raise' or 'warn'; got {mode!r}")
        self.mode = mode
        self._parents: dict[str, set[Hashable]] = {}
        self._warned: set[str] = set()
        self._session: Session | None = None

    def attach(self, session: Session) -> None:
        event.listen(session, "do_orm_execute", self._on_execute)
        self._session = session

    def detach(self) -> None:
        if self._session is not None:
            event.remove(self._session, "do_orm_execute", self._on_execute)
            self._session = None

    def _on_execute(self, state: ORMExecuteState) -> None:
        attribute = relationship_attribute(state)
        if attribute is None or state.lazy_loaded_from is None:
            return
        parent = state.lazy_loaded_from
        parents = self._parents.setdefault(attribute, set())
        parents.add(parent.key if parent.key is not None else id(parent))
        if len(parents) < THRESHOLD:
            return
        location = caller_location()
        message = (
            f"N+1 query: {attribute} loaded one parent row at a time "
            f"({len(parents)} parents so far in this unit of work) at {location}; "
            "load it for all parents at once with a load plan (selectinload / joinedload)"
        )
        if self.mode == "raise":
            raise LazyLoadDetected(message)
        if attribute not in self._warned:
            self._warned.add(attribute)
            _warn_at(message, location)


def _warn_at(message: str, location: str) -> None:
    """Attribute the warning to the caller's line: the greenlet's own stack never reaches it."""
    filename, _, line = location.rpartition(":")
    if filename and line.isdigit():
        warnings.warn_explicit(message, NPlusOneWarning, filename, int(line))
    else:
        warnings.warn(message, NPlusOneWarning, stacklevel=2)
