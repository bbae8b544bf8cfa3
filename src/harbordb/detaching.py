"""Detach every object of a session at once, without visiting them.

``Session.close()`` (and ``expunge_all()``) detaches objects one by one: a
loop over the identity map that sets each object's ``session_id`` to None.
An object counts as attached only while the session its ``session_id``
names is in SQLAlchemy's registry of sessions, keyed by ``Session.hash_key``.
So giving the session a fresh identity map and a fresh key detaches all of
them in constant time: each keeps the key of a session that is no longer
registered (keys are never reused), reads what it loaded, raises
`DetachedInstanceError` for what it did not, and can be added or merged into
another session. The session itself stays usable, empty, under its new key.

What this skips: the per-object ``persistent_to_detached`` event (a listener
on it sees nothing), and pending or deleted objects (the caller's ``close()``
still detaches those one by one; a unit of work that wrote nothing has none).

It reads SQLAlchemy internals (`INTERNALS`: the registry ``_sessions``, the
key counter ``_new_sessionid``, ``Session.hash_key`` and the identity map's
``_kill``), present in SQLAlchemy 2.1 (pinned ``<2.2``);
``tests/integration/test_uow_endings.py`` fails loudly if they change.
"""

from __future__ import annotations

from sqlalchemy.orm import Session
from sqlalchemy.orm import session as orm_session

# What `detach_all` relies on, checked by the tests: module attributes of
# sqlalchemy.orm.session, and the identity map's method.
INTERNALS = ("_sessions", "_new_sessionid")
IDENTITY_MAP_KILL = "_kill"


def detach_all(session: Session) -> None:
    """Detach every persistent object of `session` at once (see the module docstring)."""
    registry = orm_session._sessions
    loaded = session.identity_map
    session.identity_map = type(loaded)()
    loaded._kill()  # as expunge_all: nothing can become persistent in the old map
    registry.pop(session.hash_key, None)
    session.hash_key = orm_session._new_sessionid()
    registry[session.hash_key] = session
