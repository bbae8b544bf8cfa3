"""Filters on user input: substring matches and ``= ANY(array)``.

Values are always bound parameters. `contains` (and `Repository.matching`)
escape LIKE's wildcards, so user text matches literally.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import QueryableAttribute

from harbordb.inputs import check_text


def contains(
    column: ColumnElement[str] | QueryableAttribute[str], text: str
) -> ColumnElement[bool]:
    """Case-insensitive substring match on user text: ``%``, ``_`` and ``\\`` match literally.

    Text PostgreSQL cannot hold (a NUL, a lone surrogate) is `InvalidInput` here.
    """
    check_text("search text", text)
    return column.ilike(f"%{escape_like(text)}%", escape="\\")


def any_of(
    column: ColumnElement[Any] | QueryableAttribute[Any], values: Iterable[Any]
) -> ColumnElement[bool]:
    """``column = ANY(:values)`` with one array parameter (faster than an expanding IN).

    The SQL is the same for 5 values and for 500, so it is built and cached once.
    """
    expression = column.__clause_element__() if isinstance(column, QueryableAttribute) else column
    array = bindparam(None, list(values), type_=ARRAY(expression.type))
    condition: ColumnElement[bool] = expression == any_(array)
    return condition


def escape_like(text: str) -> str:
    """`text` with LIKE's wildcards and its escape character escaped (escape is ``\\``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
