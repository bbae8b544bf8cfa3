"""`harbordb.projection.build`: the generated builders make exactly what the declared
classes' constructors make, by the fast path where it is safe and by the constructor
everywhere else."""

from __future__ import annotations

import dataclasses
import enum
import weakref
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Enum
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

try:  # the `fast` extra, part of `dev`
    import msgspec
except ImportError:  # pragma: no cover
    msgspec = None  # type: ignore[assignment]

from harbordb.projection.build import Builder, Part, _twin, value_collector
from harbordb.projection.sql import _converter


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True, slots=True)
class Point:
    x: int
    label: str


@dataclass(frozen=True, slots=True)
class Line:
    id: int
    colour: Colour
    points: tuple[Point, ...]
    tags: tuple[str, ...]
    start: Point | None


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Referable:
    x: int
    label: str


@dataclass(frozen=True)
class Unslotted:
    x: int
    label: str


@dataclass(frozen=True, slots=True)
class Checked:
    x: int
    label: str

    def __post_init__(self) -> None:
        if self.x < 0:
            raise ValueError("x must not be negative")


@dataclass(frozen=True, slots=True)
class Rewritten:
    x: int
    label: str

    def __init__(self, x: int, label: str) -> None:
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "label", label.upper())


@dataclass(frozen=True, slots=True)
class Base:
    x: int


@dataclass(frozen=True, slots=True)
class Derived(Base):
    label: str


def colours(value: str | None) -> Colour | None:
    return None if value is None else Colour(value)


def point_builder(cls: type[Any] = Point) -> Builder:
    return Builder(cls, ["x", "label"], [Part("value", 0), Part("value", 1)])


def line_builder() -> Builder:
    return Builder(
        Line,
        ["id", "colour", "points", "tags", "start"],
        [
            Part("value", 0),
            Part("value", 1, colours),
            Part("many", 2, point_builder()),
            Part("values", 3),
            Part("one", 4, point_builder()),
        ],
    )


def test_slotted_frozen_dataclasses_take_the_fast_path_and_equal_the_constructors() -> None:
    assert _twin(Point, ["x", "label"]) is not None
    assert _twin(Line, ["id", "colour", "points", "tags", "start"]) is not None
    built = line_builder().one((7, "red", [(1, "a"), (2, "b")], ["t"], (3, "c")))
    expected = Line(7, Colour.RED, (Point(1, "a"), Point(2, "b")), ("t",), Point(3, "c"))
    assert built == expected
    assert type(built) is Line
    assert type(built.points[0]) is Point
    assert hash(built) == hash(expected)
    assert repr(built) == repr(expected)
    assert dataclasses.asdict(built) == dataclasses.asdict(expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.id = 8  # type: ignore[misc]
    for made in (built, expected):  # an unknown name fails alike (how depends on CPython)
        with pytest.raises((AttributeError, TypeError)):
            made.extra = 1  # type: ignore[attr-defined]


def test_empty_relationships_are_empty_tuples_and_none() -> None:
    assert line_builder().one((1, "blue", None, None, None)) == Line(1, Colour.BLUE, (), (), None)


@pytest.mark.parametrize("cls", [Unslotted, Checked, Rewritten, Derived, Referable])
def test_other_classes_are_built_by_their_constructor(cls: type[Any]) -> None:
    """No slots, a __post_init__, a hand-written __init__, a base class, a weakref slot
    (whose layout a twin cannot share): the builder calls the class, so whatever it does
    still happens."""
    assert _twin(cls, ["x", "label"]) is None
    builder = point_builder(cls)
    assert builder.one((1, "a")) == cls(1, "a")
    if cls is Referable:
        built = builder.one((1, "a"))
        assert weakref.ref(built)() is built
    if cls is Rewritten:
        assert builder.one((1, "a")).label == "A"
    if cls is Checked:
        with pytest.raises(ValueError, match="negative"):
            builder.one((-1, "a"))


def test_msgspec_structs_are_called() -> None:
    if msgspec is None:
        pytest.skip("msgspec is not installed (the `fast` extra, part of `dev`)")

    class Spot(msgspec.Struct, frozen=True):
        x: int
        label: str

    assert point_builder(Spot).fill([(1, "a"), (2, "b")]) == [Spot(1, "a"), Spot(2, "b")]


def test_fill_puts_each_object_in_its_rows_place() -> None:
    rows: list[Any] = [(1, "a"), (2, "b")]
    built = point_builder().fill(rows)
    assert built is rows
    assert rows == [Point(1, "a"), Point(2, "b")]


@pytest.mark.parametrize("width", [None, 7])
def test_found_parts_read_objects_by_parent_key(width: int | None) -> None:
    """Rows read value by value, or (of a known width, as every read's are) unpacked."""
    builder = Builder(
        Line,
        ["id", "colour", "points", "tags", "start"],
        [
            Part("value", 0),
            Part("value", 1, colours),
            Part("found-many", 5, slot=0),
            Part("found-many", 5, slot=1),
            Part("found-one", 6, slot=2),
        ],
        width,
    )
    found = ({10: (Point(1, "a"),)}, {10: ("x", "y")}, {20: Point(2, "b")})
    assert builder.fill([(1, "red", None, None, None, 10, 20)], found) == [
        Line(1, Colour.RED, (Point(1, "a"),), ("x", "y"), Point(2, "b"))
    ]
    assert builder.one((2, "blue", None, None, None, 11, 21), found) == Line(
        2, Colour.BLUE, (), (), None
    )


@pytest.mark.parametrize("width", [None, 3])
def test_collect_groups_objects_by_key_in_row_order(width: int | None) -> None:
    """Rows come ordered by key; a key met again later (a collation that orders
    differently from Python's equality) still gets all its objects, in row order."""
    rows: list[Any] = [(1, "a", 10), (3, "c", 10), (2, "b", 11), (4, "d", 12)]
    builder = Builder(Point, ["x", "label"], [Part("value", 0), Part("value", 1)], width)
    grouped = builder.collect(2, single=False)(rows)
    assert grouped == {
        10: (Point(1, "a"), Point(3, "c")),
        11: (Point(2, "b"),),
        12: (Point(4, "d"),),
    }
    assert all(type(group) is tuple for group in grouped.values())
    interleaved: list[Any] = [(1, "a", 10), (2, "b", 11), (3, "c", 10), (4, "d", 10)]
    assert builder.collect(2, single=False)(interleaved) == {
        10: (Point(1, "a"), Point(3, "c"), Point(4, "d")),
        11: (Point(2, "b"),),
    }
    assert builder.collect(2, single=False)([]) == {}
    single: list[Any] = [(1, "a", 10)]
    assert builder.collect(2, single=True)(single) == {10: Point(1, "a")}
    assert single == [None]  # released as built
    if width is not None:  # a row of another width is refused, never misread
        with pytest.raises(ValueError, match="unpack"):
            builder.collect(2, single=True)([(1, "a", 10, 11)])
    upper = value_collector(str.upper, 1, single=False)
    assert upper([("a", 1), ("b", 1), ("c", 2)]) == {1: ("A", "B"), 2: ("C",)}


def test_enum_values_are_looked_up_and_unknown_ones_still_refused() -> None:
    convert = _converter(
        Enum(Colour, native_enum=False, values_callable=lambda e: [m.value for m in e]),
        asyncpg_dialect(),  # type: ignore[no-untyped-call]
    )
    assert convert is not None
    assert convert("red") is Colour.RED
    assert convert(None) is None
    with pytest.raises(LookupError, match="not among the defined enum values"):
        convert("green")


def test_enum_lookup_tables_are_subscripted_by_the_builders() -> None:
    """Values, collections of values and per-level values: each through the table, a
    stored value that is not the enum's refused as by SQLAlchemy."""
    convert = _converter(
        Enum(Colour, native_enum=False, values_callable=lambda e: [m.value for m in e]),
        asyncpg_dialect(),  # type: ignore[no-untyped-call]
    )
    assert isinstance(convert, dict)
    builder = Builder(
        Line,
        ["id", "colour", "points", "tags", "start"],
        [
            Part("value", 0),
            Part("value", 1, convert),
            Part("many", 2, point_builder()),
            Part("values", 3, convert),
            Part("one", 4, point_builder()),
        ],
    )
    built = builder.one((1, "blue", None, ["red", None], None))
    assert built == Line(1, Colour.BLUE, (), (Colour.RED, None), None)  # type: ignore[arg-type]
    assert built.colour is Colour.BLUE
    with pytest.raises(LookupError, match="not among the defined enum values"):
        builder.one((1, "green", None, None, None))
    with pytest.raises(LookupError, match="not among the defined enum values"):
        builder.one((1, "red", None, ["green"], None))
    by_key = value_collector(convert, 1, single=False)([("red", 5), ("blue", 5)])
    assert by_key == {5: (Colour.RED, Colour.BLUE)}
    with pytest.raises(LookupError, match="not among the defined enum values"):
        value_collector(convert, 1, single=True)([("green", 5)])


@pytest.mark.parametrize("width", [None, 2])
def test_a_fast_converter_is_tried_first_and_its_fallback_takes_what_it_refuses(
    width: int | None,
) -> None:
    fallbacks: list[Any] = []

    def fallback(value: Any) -> Any:
        fallbacks.append(value)
        return -1

    parts = [Part("value", 0, call=fallback, fast=int), Part("value", 1)]
    builder = Builder(Point, ["x", "label"], parts, width)
    rows = [("7", "a"), (None, "b"), ("seven", "c")]
    assert builder.fill(list(rows)) == [Point(7, "a"), Point(-1, "b"), Point(-1, "c")]
    assert fallbacks == [None, "seven"]  # int raised TypeError, then ValueError
