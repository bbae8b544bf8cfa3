"""ORM objects made from driver rows, as SQLAlchemy's loading makes them.

A new object comes from its class manager, gets its columns in ``__dict__``
(result processors such as an Enum's applied), its identity key, and is
registered as persistent in the session's identity map. An object already in
the identity map is kept, its unloaded columns filled in; with
``populate_existing`` it is overwritten, as SQLAlchemy does. Each model's
`Entity` carries a function generated for its columns (`make`): one
assignment per column, the identity key built once, the identity map
looked up once and the instance made and registered inline (as SQLAlchemy's
own loading and ``ClassManager.new_instance`` do), no loop and no per-value
test.

Non-public SQLAlchemy API used (`harbordb.repository.direct.SQLALCHEMY_MEMBERS`,
checked by a test): ``IdentityMap._dict`` and ``_wr`` (what its
``_add_unpresent`` sets, done inline),
``ClassManager._state_constructor``, ``InstanceState._commit`` /
``_commit_all``, ``CollectionAdapter(impl, state, data)``, the attribute
impl's ``collection_factory`` and ``dispatch``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Mapper, RelationshipProperty, Session
from sqlalchemy.orm.attributes import instance_dict, instance_state, set_committed_value
from sqlalchemy.orm.collections import CollectionAdapter
from sqlalchemy.orm.instrumentation import ClassManager

Maker = Callable[["Hydrator", Sequence[Any]], Any]


@dataclass(frozen=True, eq=False)
class Entity:
    """How one model's objects are read from a row: (attribute, position, processor)
    per column, the primary key's positions, the many-to-one steps joined, and the
    generated function making (or finding) the object of a row (`Hydrator.build`)."""

    mapper: Mapper[Any]
    identity_class: type[Any]
    columns: tuple[tuple[str, int, Callable[[Any], Any] | None], ...]
    pk: tuple[int, ...]
    partial_pks: bool
    joins: tuple[tuple[str, Entity], ...]
    make: Maker


def entity_of(
    mapper: Mapper[Any],
    identity_class: type[Any],
    columns: tuple[tuple[str, int, Callable[[Any], Any] | None], ...],
    pk: tuple[int, ...],
    partial_pks: bool,
    joins: tuple[tuple[str, Entity], ...],
) -> Entity:
    """The `Entity` of these columns, with its `make` generated."""
    manager = mapper.class_manager
    scope: dict[str, Any] = {
        "identity_class": identity_class,
        "cls": mapper.class_,
        "new_object": mapper.class_.__new__,
        "State": manager._state_constructor,
        "manager": manager,
        "instance_state": instance_state,
        "instance_dict": instance_dict,
    }
    lines = ["def make(h, row):"]
    if len(pk) == 1:
        lines += [
            f"    ident = row[{int(pk[0])}]",
            "    if ident is None:",
            "        return None",
            "    key = (identity_class, (ident,), None)",
        ]
    else:
        lines += [
            f"    ident = ({', '.join(f'row[{int(i)}]' for i in pk)},)",
            "    if None in ident:",
            # allow_partial_pks: None only when every part is NULL
            f"        if {not partial_pks!r} or ident.count(None) == {len(pk)}:",
            "            return None",
            "    key = (identity_class, ident, None)",
        ]
    lines += [
        "    state = h.states.get(key)",  # IdentityMap.get, without its call
        "    if state is not None:",
        "        obj = state.obj()",
        "        if obj is not None:",
        "            if id(obj) not in h.fresh:",
        "                h.existing(entity, obj, row)",
        "            return obj",
    ]
    if type(manager) is ClassManager:  # ClassManager.new_instance, inline
        lines += [
            "    obj = new_object(cls)",
            "    state = State(obj, manager)",
            "    values = instance_dict(obj)",
            f"    values[{manager.STATE_ATTR!r}] = state",
        ]
    else:
        lines += [
            "    obj = manager.new_instance()",
            "    state = instance_state(obj)",
            "    values = instance_dict(obj)",
        ]
    lines += [
        "    state.key = key",
        "    state.identity_token = None",
        "    state.session_id = h.session_id",
        "    h.states[key] = state",  # IdentityMap._add_unpresent, inline
        "    state._instance_dict = h.map_ref",
        "    h.fresh[id(obj)] = obj",
    ]
    for i, (name, position, process) in enumerate(columns):
        value = f"row[{int(position)}]"
        if process is not None:
            scope[f"process_{i}"] = process
            value = f"process_{i}({value})"
        lines.append(f"    values[{name!r}] = {value}")
    for i, (name, joined) in enumerate(joins):
        scope[f"join_{i}"] = joined.make
        lines.append(f"    values[{name!r}] = join_{i}(h, row)")
    lines.append("    return obj")
    exec("\n".join(lines), scope)  # names are repr()-quoted, positions ints
    entity = Entity(mapper, identity_class, columns, pk, partial_pks, joins, scope["make"])
    scope["entity"] = entity
    return entity


class Hydrator:
    """Makes (or finds) the objects of one read in a session's identity map."""

    __slots__ = ("fresh", "identity_map", "kept", "map_ref", "overwrite", "session_id", "states")

    def __init__(self, session: Session, overwrite: bool) -> None:
        self.identity_map = session.identity_map
        self.states = self.identity_map._dict  # identity key -> state
        self.map_ref = self.identity_map._wr  # what a state in the map points back to
        self.session_id = session.hash_key
        self.overwrite = overwrite
        # The objects this read created, and those it found in the session and
        # filled in, by id; held here so that no id is reused during the read.
        self.fresh: dict[int, Any] = {}
        self.kept: dict[int, Any] = {}

    def build(self, entity: Entity, row: Sequence[Any]) -> Any:
        """The object of `entity` in `row` (None when its primary key is NULL)."""
        return entity.make(self, row)

    def collection_setter(
        self, relationship: RelationshipProperty[Any]
    ) -> Callable[[Any, list[Any]], None] | None:
        """Sets a list collection, as loaded, on an object this read created: what
        `set_committed_value` does for a new state (no history, nothing expired, no
        pending mutations to replay), in a third of its time. None when the collection
        is not a list or ``init_collection`` listeners must see it."""
        impl: Any = relationship.parent.class_manager[relationship.key].impl
        factory = impl.collection_factory
        if impl.dispatch.init_collection or not isinstance(factory(), list):
            return None
        key, fresh = relationship.key, self.fresh

        def set_loaded(owner: Any, children: list[Any]) -> None:
            if id(owner) not in fresh:
                set_committed_value(owner, key, children)
                return
            collection = factory()
            CollectionAdapter(impl, instance_state(owner), collection)
            list.extend(collection, children)  # the list's own extend: no events
            instance_dict(owner)[key] = collection

        return set_loaded

    def existing(self, entity: Entity, obj: Any, row: Sequence[Any]) -> None:
        """An object the session had: overwritten with ``populate_existing``, else only
        its unloaded attributes filled in (as SQLAlchemy's partial population does);
        once per read."""
        if id(obj) in self.kept:
            return
        self.kept[id(obj)] = obj
        state = instance_state(obj)
        values = instance_dict(obj)
        unloaded = None if self.overwrite else state.unloaded
        filled: list[str] = []
        for name, position, process in entity.columns:
            if unloaded is None or name in unloaded:
                value = row[position]
                values[name] = value if process is None else process(value)
                filled.append(name)
        for name, joined in entity.joins:
            child = joined.make(self, row)
            if unloaded is None or name in unloaded:
                values[name] = child
                filled.append(name)
        if unloaded is None:
            state._commit_all(values, self.identity_map)
        elif filled:
            state._commit(values, filled)
