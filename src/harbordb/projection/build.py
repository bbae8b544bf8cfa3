"""The functions that build a projection's objects from decoded rows, generated per class.

A frozen dataclass's own ``__init__`` sets every field through
``object.__setattr__`` (its ``__setattr__`` refuses): about three times the
cost of a plain slot store. For a slotted frozen dataclass whose ``__init__``
is the generated one (checked once, by building a probe both ways), the
builders fill an instance of a twin class with the same slots (plain slot
stores) and then give it the declared class: the same layout, so the object is
exactly what ``cls(...)`` makes. Other classes (msgspec Structs, built in C;
dataclasses with ``__post_init__``, a base class or no slots) are called with
the values.

Each class gets its loops generated once (`Builder`): the object built inline
in the loop body (no call per object), every row released as soon as its
object exists (objects take the rows' places in the driver's list), nested
arrays turned into tuples of child objects in place, enum values looked up.
"""

from __future__ import annotations

import dataclasses
import inspect
import keyword
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

PartKind = Literal["value", "many", "one", "values", "found-many", "found-one"]


@dataclass(frozen=True)
class Part:
    """Where one field's value comes from.

    ``value``: ``row[index]``, through `call` when given (a converter; a dict, as
    enum lookup tables are, is subscripted instead of called). With `fast`, the
    generated code calls `fast` inline and `call` only where `fast` raises
    `TypeError` or `ValueError` (a try block costs nothing until it catches; a
    Python function call per value does).
    ``many``: ``row[index]`` is a list of nested records, `call` the child's
    `Builder`; ``one``: one nested record or None; ``values``: a list of values
    (`call` converts each, when given). ``found-many`` / ``found-one``: read by
    a statement of its own; the objects are in ``found[slot]``, a dict keyed by
    the parent key ``row[index]`` (a tuple of them for ``found-many``).
    """

    kind: PartKind
    index: int
    call: Any = None
    slot: int = 0
    fast: Any = None  # ``value``: a C function tried before `call`, which takes what it raises on


class Builder:
    """The generated functions of one projection class over rows laid out as `parts`.

    ``one(row, found)``: the object of one row. ``fill(rows, found)``: `rows`
    with each row replaced by its object. ``many(rows)``: a tuple of the objects
    of nested records (the list is reused). ``collect(rows, link, single, found)``:
    the objects by ``row[link]``, in a tuple each (``single``: the object).
    With `width`, every row has exactly that many values and is unpacked once.
    """

    def __init__(
        self,
        cls: type[Any],
        names: Sequence[str],
        parts: Sequence[Part],
        width: int | None = None,
    ) -> None:
        self.cls = cls
        self._scope: dict[str, Any] = {"_cls": cls}
        self._value = _reader(width)
        self._construct = _construct(cls, names, parts, self._scope, width)
        functions = _generate(
            cls,
            self._scope,
            [
                ("one", "r, found=()", [*self._construct, "return o"]),
                ("fill", "rows, found=()", _loop(self._construct, "rows[i] = o", "return rows")),
                (
                    "many",
                    "rows",
                    [
                        "if type(rows) is not list: rows = list(rows)",
                        *_loop(self._construct, "rows[i] = o", "return tuple(rows)"),
                    ],
                ),
            ],
        )
        self.one: Callable[..., Any] = functions["one"]
        self.fill: Callable[..., list[Any]] = functions["fill"]
        self.many: Callable[[Any], tuple[Any, ...]] = functions["many"]
        self._collectors: dict[tuple[int, bool], Callable[..., dict[Any, Any]]] = {}

    def collect(self, link: int, single: bool) -> Callable[..., dict[Any, Any]]:
        """``collect(rows, found=())``: the objects of `rows` by ``row[link]``."""
        found = self._collectors.get((link, single))
        if found is None:
            found = self._collectors[(link, single)] = collector(
                self.cls, self._construct, self._scope, self._value(link), single
            )
        return found


def collector(
    cls: Any, construct: list[str], scope: dict[str, Any], link: str, single: bool
) -> Callable[..., dict[Any, Any]]:
    """A generated loop grouping the objects `construct` builds by `link`, the
    expression of the row's key (``r[2]``, or ``v2`` once unpacked): one object per
    key (`single`), else a tuple of them in row order.

    The per-level statements order their rows by that key first, so each key's
    objects come in one run: the tuple is a slice of all the objects (no list per
    key). A key seen in two runs (possible only if the server's order and Python's
    equality disagree, as with a nondeterministic collation) gets both, in order.
    """
    if single:
        body = [
            "by_key = {}",
            "for i, r in enumerate(rows):",
            "    rows[i] = None",
            *(f"    {line}" for line in construct),
            f"    by_key[{link}] = o",
            "return by_key",
        ]
    else:
        scope = {**scope, "_start": object()}
        body = [
            "starts = []",
            "last = _start",
            "for i, r in enumerate(rows):",
            *(f"    {line}" for line in construct),
            "    rows[i] = o",
            f"    if (k := {link}) != last:",
            "        last = k",
            "        starts.append((i, k))",
            "flat = tuple(rows)",
            "by_key = {}",
            "get = by_key.get",
            "end = len(flat)",
            "for i, k in reversed(starts):",
            "    later = get(k)",
            "    by_key[k] = flat[i:end] if later is None else flat[i:end] + later",
            "    end = i",
            "return by_key",
        ]
    function: Callable[..., dict[Any, Any]] = _generate(
        cls, scope, [("collect", "rows, found=()", body)]
    )["collect"]
    return function


def value_collector(
    convert: Callable[[Any], Any] | None, link: int, single: bool
) -> Callable[..., dict[Any, Any]]:
    """`collector` for rows holding one value each (the values of a related column)."""
    scope: dict[str, Any] = {"_c": convert}
    if convert is None:
        construct = ["o = r[0]"]
    elif isinstance(convert, dict):  # a lookup table (enum values)
        construct = ["o = _c[r[0]]"]
    else:
        construct = ["o = _c(r[0])"]
    return collector("values", construct, scope, f"r[{link}]", single)


def _loop(construct: list[str], keep: str, done: str) -> list[str]:
    return [
        "for i, r in enumerate(rows):",
        *(f"    {line}" for line in construct),
        f"    {keep}",
        done,
    ]


def _generate(
    cls: Any, scope: dict[str, Any], functions: list[tuple[str, str, list[str]]]
) -> dict[str, Any]:
    source = "".join(
        f"def {name}({arguments}):\n" + "".join(f"    {line}\n" for line in body)
        for name, arguments, body in functions
    )
    label = getattr(cls, "__qualname__", str(cls))
    namespace = dict(scope)
    exec(compile(source, f"<harbordb projection builder of {label}>", "exec"), namespace)
    return {name: namespace[name] for name, _, _ in functions}


def _reader(width: int | None) -> Callable[[int], str]:
    """How the generated code reads value `i` of a row: ``r[i]``, or, for rows of a
    known `width`, ``vi`` once the row is unpacked (`_unpack`): cheaper than
    subscripting an asyncpg record value by value."""
    if not width:
        return lambda index: f"r[{index}]"
    return lambda index: f"v{index}"


def _unpack(width: int | None) -> list[str]:
    if not width:
        return []
    targets = ", ".join(f"v{index}" for index in range(width))
    return [f"{targets}{',' if width == 1 else ''} = r"]


def _construct(
    cls: type[Any],
    names: Sequence[str],
    parts: Sequence[Part],
    scope: dict[str, Any],
    width: int | None,
) -> list[str]:
    """Lines building ``o`` from row ``r`` (and ``found``)."""
    value = _reader(width)
    values = [_expression(part, position, scope, value) for position, part in enumerate(parts)]
    first = [*_unpack(width), *_tried(parts, scope, value)]
    twin = _twin(cls, names)
    if twin is None:
        return [*first, f"o = _cls({', '.join(values)})"]
    scope["_twin"] = twin
    stores = [f"o.{name} = {value}" for name, value in zip(names, values, strict=True)]
    # Calling the twin (no __init__ of its own) allocates faster than object.__new__.
    return [*first, "o = _twin()", *stores, "o.__class__ = _cls"]


def _tried(parts: Sequence[Part], scope: dict[str, Any], value: Callable[[int], str]) -> list[str]:
    """Lines setting ``tI`` for each part with a `fast` converter (`Part`)."""
    lines = []
    for position, part in enumerate(parts):
        if part.fast is not None:
            scope[f"_f{position}"], scope[f"_c{position}"] = part.fast, part.call
            read = value(part.index)
            lines += [
                "try:",
                f"    t{position} = _f{position}({read})",
                "except (TypeError, ValueError):",
                f"    t{position} = _c{position}({read})",
            ]
    return lines


def _expression(
    part: Part, position: int, scope: dict[str, Any], value: Callable[[int], str]
) -> str:
    read = value(part.index)
    call = f"_c{position}"
    kind = part.kind
    if kind == "found-one":
        return f"found[{part.slot}].get({read})"
    if kind == "found-many":
        return f"(() if (t := found[{part.slot}].get({read})) is None else t)"
    if part.fast is not None:
        return f"t{position}"
    if part.call is None:
        if kind == "value":
            return read
        assert kind == "values", kind
        return f"(() if (t := {read}) is None else tuple(t))"
    if kind in ("many", "one"):
        child: Builder = part.call
        scope[call] = child.many if kind == "many" else child.one
        empty = "()" if kind == "many" else "None"
        return f"({empty} if (t := {read}) is None else {call}(t))"
    if kind == "value" and isinstance(part.call, dict):  # a lookup table (enum values)
        scope[call] = part.call
        return f"{call}[{read}]"
    scope[call] = part.call.__getitem__ if isinstance(part.call, dict) else part.call
    if kind == "value":
        return f"{call}({read})"
    return f"(() if (t := {read}) is None else tuple(map({call}, t)))"


def _twin(cls: type[Any], names: Sequence[str]) -> type[Any] | None:
    """A class with `cls`'s slots and a plain ``__setattr__``, when objects filled through
    it and given class `cls` equal those of ``cls(*values)``; else None."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        return None
    slots = cls.__dict__.get("__slots__")
    if (
        cls.__bases__ != (object,)
        or not isinstance(slots, tuple)
        or set(names) - set(slots)
        or hasattr(cls, "__post_init__")
        or any(not n.isidentifier() or keyword.iskeyword(n) or n.startswith("__") for n in names)
        or list(inspect.signature(cls).parameters) != list(names)
    ):
        return None
    twin = type(f"{cls.__name__}Builder", (object,), {"__slots__": slots})
    probe_values = [object() for _ in names]
    try:
        expected = cls(*probe_values)
        probe: Any = object.__new__(twin)
        for name, value in zip(names, probe_values, strict=True):
            setattr(probe, name, value)
        probe.__class__ = cls
    except Exception:
        return None
    same = all(
        getattr(probe, name) is value and getattr(expected, name) is value
        for name, value in zip(names, probe_values, strict=True)
    )
    return twin if same and type(probe) is cls else None
