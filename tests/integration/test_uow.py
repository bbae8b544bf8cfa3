"""The unit of work: explicit commit, rollback otherwise, savepoints, settings, callbacks."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from benchmarks.counting import count_round_trips
from sqlalchemy import delete, event, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection
from tests.library.models import Author, Book, BookStatus
from tests.library.repositories import (
    AuthorRepository,
    BookRepository,
    CatalogRepository,
    GenreRepository,
    LibraryWork,
)

from harbordb import Database, count_queries
from harbordb.errors import (
    AfterCommitError,
    ConfigurationError,
    Conflict,
    DatabaseError,
    DriverError,
    PermissionDenied,
    UnitOfWorkClosed,
)
from harbordb.uow import UnitOfWork


def _email() -> str:
    return f"uow-{uuid.uuid4().hex}@example.com"


@pytest.fixture
async def emails(database: Database) -> AsyncIterator[list[str]]:
    """Emails of authors a test commits; deleted afterwards."""
    created: list[str] = []
    yield created
    async with database.unit_of_work() as uow:
        await uow.session.execute(delete(Author).where(Author.email.in_(created)))
        await uow.commit()


async def _authors(db: Database, email: str) -> int:
    async with db.unit_of_work(read_only=True) as uow:
        result = await uow.session.execute(
            select(func.count()).select_from(Author).where(Author.email == email)
        )
        return result.scalar_one()


async def _count_in(connection: AsyncConnection, email: str) -> int:
    result = await connection.execute(
        select(func.count()).select_from(Author).where(Author.email == email)
    )
    return result.scalar_one()


# -- commit and rollback ----------------------------------------------------


async def test_commit_persists(db: Database, emails: list[str]) -> None:
    emails.append(email := _email())
    async with db.unit_of_work() as uow:
        uow.session.add(Author(email=email, name="Ada"))
        await uow.commit()
    assert uow.committed
    assert await _authors(db, email) == 1


async def test_leaving_without_commit_rolls_back(db: Database, emails: list[str]) -> None:
    emails.append(email := _email())
    async with db.unit_of_work() as uow:
        uow.session.add(Author(email=email, name="Ada"))
        await uow.flush()
        assert await _count_in(await uow.session.connection(), email) == 1
    assert not uow.committed
    assert await _authors(db, email) == 0


async def test_an_exception_rolls_back_and_propagates(
    database: Database, emails: list[str]
) -> None:
    emails.append(email := _email())

    async def fails() -> None:
        async with database.unit_of_work() as uow:
            uow.session.add(Author(email=email, name="Ada"))
            await uow.flush()
            raise LookupError("boom")

    with pytest.raises(LookupError, match="boom"):
        await fails()
    assert await _authors(database, email) == 0


async def test_a_finished_unit_of_work_refuses_further_use(
    database: Database, emails: list[str]
) -> None:
    emails.append(email := _email())
    uow = database.unit_of_work()
    with pytest.raises(UnitOfWorkClosed, match="has not started"):
        uow.session  # noqa: B018
    async with uow:
        uow.session.add(Author(email=email, name="Ada"))
        await uow.commit()
        with pytest.raises(UnitOfWorkClosed, match="committed"):
            uow.session  # noqa: B018
        with pytest.raises(UnitOfWorkClosed):
            await uow.commit()
        with pytest.raises(UnitOfWorkClosed):
            await uow.flush()
        with pytest.raises(UnitOfWorkClosed):
            uow.authors  # noqa: B018
        with pytest.raises(UnitOfWorkClosed):
            uow.after_commit(lambda: None)
        with pytest.raises(UnitOfWorkClosed):
            async with uow.savepoint():
                pass
    with pytest.raises(UnitOfWorkClosed, match="only once"):
        async with uow:
            pass
    rolled_back = database.unit_of_work()
    async with rolled_back:
        pass
    with pytest.raises(UnitOfWorkClosed, match="rolled back"):
        rolled_back.session  # noqa: B018
    assert await _authors(database, email) == 1


async def test_joined_unit_of_work_commits_to_a_savepoint(
    database: Database, db_connection: AsyncConnection
) -> None:
    email = _email()
    async with database.unit_of_work(connection=db_connection) as uow:
        uow.session.add(Author(email=email, name="Ada"))
        await uow.commit()
    assert db_connection.in_transaction()
    assert await _count_in(db_connection, email) == 1  # released into the outer transaction
    assert await _authors(database, email) == 0  # which has not committed

    second = _email()
    async with database.unit_of_work(connection=db_connection) as uow:
        uow.session.add(Author(email=second, name="Bea"))
        await uow.flush()
        assert await _count_in(db_connection, second) == 1  # flushed inside the savepoint
    assert await _count_in(db_connection, second) == 0  # rolled back to its savepoint
    assert await _count_in(db_connection, email) == 1  # the first one's release stands
    assert db_connection.in_transaction()


async def test_unit_of_work_over_a_given_session(database: Database, emails: list[str]) -> None:
    emails.append(email := _email())
    async with UnitOfWork(database.session()) as uow:
        uow.session.add(Author(email=email, name="Ada"))
        await uow.commit()
    assert await _authors(database, email) == 1


# -- savepoints -------------------------------------------------------------


async def test_savepoint_rolls_back_on_error_and_is_released_otherwise(
    database: Database, db_connection: AsyncConnection
) -> None:
    kept, dropped, later = _email(), _email(), _email()
    async with database.unit_of_work(connection=db_connection) as uow:
        uow.session.add(Author(email=kept, name="kept"))
        await uow.flush()

        async def fails() -> None:
            async with uow.savepoint():
                uow.session.add(Author(email=dropped, name="dropped"))
                await uow.flush()
                raise LookupError

        with pytest.raises(LookupError):
            await fails()
        async with uow.savepoint():
            uow.session.add(Author(email=later, name="later"))
        connection = await uow.session.connection()
        counts = [await _count_in(connection, email) for email in (kept, dropped, later)]
        assert counts == [1, 0, 1]
        await uow.commit()


async def test_savepoint_translates_errors_and_the_unit_of_work_goes_on(
    database: Database, db_connection: AsyncConnection
) -> None:
    email = _email()
    async with database.unit_of_work(connection=db_connection) as uow:
        uow.session.add(Author(email=email, name="first"))
        await uow.flush()

        async def flush_duplicate() -> None:
            async with uow.savepoint():
                uow.session.add(Author(email=email, name="second"))
                await uow.flush()

        async def insert_duplicate() -> None:
            async with uow.savepoint():
                await uow.session.execute(insert(Author).values(email=email, name="third"))

        with pytest.raises(Conflict) as flushed:
            await flush_duplicate()
        with pytest.raises(Conflict) as raw:
            await insert_duplicate()
        for caught in (flushed, raw):
            assert caught.value.constraint == "uq_authors_email"
            assert isinstance(caught.value.__cause__, DriverError)
        assert await _count_in(await uow.session.connection(), email) == 1
        await uow.commit()
    assert await _count_in(db_connection, email) == 1


# -- errors leave as harbordb errors ------------------------------------------


async def test_errors_escaping_the_block_are_translated(
    database: Database, db_connection: AsyncConnection
) -> None:
    email = _email()
    await db_connection.execute(insert(Author).values(email=email, name="taken"))
    with pytest.raises(Conflict) as caught:
        async with database.unit_of_work(connection=db_connection) as uow:
            await uow.session.execute(insert(Author).values(email=email, name="again"))
    assert isinstance(caught.value.__cause__, DriverError)


async def test_a_failed_commit_is_translated_and_ends_the_unit_of_work(
    database: Database, emails: list[str]
) -> None:
    emails.append(email := _email())
    async with database.unit_of_work() as uow:
        uow.session.add(Author(email=email, name="taken"))
        await uow.commit()
    called: list[str] = []
    uow = database.unit_of_work()

    async def commit_duplicate() -> None:
        async with uow:
            uow.session.add(Author(email=email, name="again"))
            uow.after_commit(lambda: called.append("after"))
            await uow.commit()  # flushes, then fails

    with pytest.raises(Conflict):
        await commit_duplicate()
    assert called == []
    assert not uow.committed
    with pytest.raises(UnitOfWorkClosed):
        uow.session  # noqa: B018


# -- transaction settings -----------------------------------------------------


async def _show(uow: UnitOfWork) -> dict[str, Any]:
    row = (
        await uow.session.execute(
            text(
                "SELECT current_setting('statement_timeout') AS statement_timeout, "
                "current_setting('lock_timeout') AS lock_timeout, "
                "current_setting('transaction_isolation') AS isolation, "
                "current_setting('transaction_read_only') AS read_only, "
                "pg_backend_pid() AS pid"
            )
        )
    ).one()
    return dict(row._mapping)


async def test_settings_apply_to_the_transaction_only(one_connection_db: Database) -> None:
    """`one_connection_db` has one pooled connection: leaked settings would show `after`."""
    async with one_connection_db.unit_of_work(
        read_only=True,
        statement_timeout=1.5,
        lock_timeout=timedelta(milliseconds=250),
        isolation_level="SERIALIZABLE",
    ) as uow:
        inside = await _show(uow)
    async with one_connection_db.unit_of_work() as uow:
        after = await _show(uow)
    assert {k: v for k, v in inside.items() if k != "pid"} == {
        "statement_timeout": "1500ms",
        "lock_timeout": "250ms",
        "isolation": "serializable",
        "read_only": "on",
    }
    assert {k: v for k, v in after.items() if k != "pid"} == {
        "statement_timeout": "0",
        "lock_timeout": "0",
        "isolation": "read committed",
        "read_only": "off",
    }
    if one_connection_db.settings.pooler == "none":  # direct
        assert after["pid"] == inside["pid"]  # the same connection, reset


async def test_read_only_refuses_writes(database: Database) -> None:
    with pytest.raises(DatabaseError) as caught:
        async with database.unit_of_work(read_only=True) as uow:
            await uow.session.execute(insert(Author).values(email=_email(), name="x"))
    assert caught.value.sqlstate == "25006"  # read_only_sql_transaction


async def test_read_only_goes_with_begin(database: Database) -> None:
    """READ ONLY alone costs no statement and no round trip of its own: BEGIN READ ONLY,
    the statement (prepare, execute), ROLLBACK."""
    current = select(func.current_setting("transaction_read_only"))
    async with database.unit_of_work(read_only=True) as uow:  # a connection just checked in
        await uow.session.execute(current)
    with count_queries(database) as queries, count_round_trips() as trips:
        async with database.unit_of_work(read_only=True) as uow:
            assert (await uow.session.execute(current)).scalar_one() == "on"
    assert queries.count == 1
    assert trips[0] == 4
    with count_round_trips() as trips:
        async with database.unit_of_work(read_only=True):
            pass  # nothing begun, nothing to roll back
    assert trips[0] == 0


async def test_settings_cost_one_statement(database: Database) -> None:
    with count_queries(database) as queries:
        async with database.unit_of_work() as uow:
            await uow.session.execute(text("SELECT 1"))
    plain = queries.count
    with count_queries(database) as queries:
        async with database.unit_of_work(
            read_only=True, statement_timeout=2, lock_timeout=1, role="reader", claims={"sub": "1"}
        ) as uow:
            await uow.session.execute(text("SELECT 1"))
    assert queries.count == plain + 1
    assert "set_config" in queries.statements[0]


async def test_settings_go_on_the_driver_unless_joined(
    database: Database, db_connection: AsyncConnection
) -> None:
    """The settings statement skips SQLAlchemy's execution (its client CPU), still counted
    and inside the transaction BEGIN opened with the flags; a unit of work joined to an
    outer transaction (a savepoint) sends it through its session."""
    through_sqlalchemy: list[str] = []

    def seen(*args: Any) -> None:
        through_sqlalchemy.append(args[2])  # (connection, cursor, statement, ...)

    engine = database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        with count_queries(database) as queries:
            async with database.unit_of_work(
                read_only=True, statement_timeout=3, isolation_level="REPEATABLE READ"
            ) as uow:
                shown = await _show(uow)
        assert (shown["statement_timeout"], shown["isolation"], shown["read_only"]) == (
            "3s",
            "repeatable read",
            "on",
        )
        assert queries.count == 2
        assert "set_config" in queries.statements[0]
        assert not [s for s in through_sqlalchemy if "set_config" in s]
        async with database.unit_of_work(lock_timeout=2) as uow:  # BEGIN even at the default
            assert (await _show(uow))["lock_timeout"] == "2s"  # level (a lone read needs none)

        async with database.unit_of_work(connection=db_connection, lock_timeout=2) as uow:
            joined = await _show(uow)
        assert joined["lock_timeout"] == "2s"
        assert [s for s in through_sqlalchemy if "set_config" in s]
    finally:
        event.remove(engine, "before_cursor_execute", seen)


BAD_OPTIONS: list[dict[str, Any]] = [
    {"statement_timeout": 0},
    {"statement_timeout": -1},
    {"statement_timeout": float("nan")},
    {"statement_timeout": float("inf")},
    {"statement_timeout": "5s"},
    {"statement_timeout": True},
    {"lock_timeout": timedelta(0)},
    {"lock_timeout": timedelta(days=25)},
    {"lock_timeout": "1; SET ROLE postgres"},
    {"isolation_level": "READ UNCOMMITTED; DROP TABLE authors"},
    {"isolation_level": "serializable"},
    {"read_only": "yes"},
    {"role": "postgres"},
    {"role": "library_reader"},
    {"role": "reader; RESET ROLE"},
    {"claims": ["sub", "1"]},
    {"claims": {"sub": object()}},
    {"nplusone": "loud"},
]


@pytest.mark.parametrize("options", BAD_OPTIONS, ids=lambda o: next(iter(o)))
async def test_bad_options_are_refused_before_any_sql(
    database: Database, options: dict[str, Any]
) -> None:
    with count_queries(database) as queries, pytest.raises(ConfigurationError):
        database.unit_of_work(**options)
    assert queries.count == 0


async def test_isolation_level_cannot_be_set_on_a_joined_transaction(
    database: Database, db_connection: AsyncConnection
) -> None:
    with pytest.raises(ConfigurationError, match="isolation_level"):
        database.unit_of_work(connection=db_connection, isolation_level="SERIALIZABLE")


# -- after-commit callbacks -----------------------------------------------------


async def test_after_commit_callbacks_run_only_after_a_commit(
    database: Database, db_connection: AsyncConnection
) -> None:
    called: list[str] = []

    async def async_callback() -> None:
        called.append("async")

    async with database.unit_of_work(connection=db_connection) as uow:
        uow.after_commit(lambda: called.append("sync"))
        uow.after_commit(async_callback)

        async def rolled_back() -> None:
            async with uow.savepoint():
                uow.after_commit(lambda: called.append("rolled back savepoint"))
                raise LookupError

        with pytest.raises(LookupError):
            await rolled_back()
        async with uow.savepoint():
            uow.after_commit(lambda: called.append("released savepoint"))
        assert called == []
        await uow.commit()
    assert called == ["sync", "async", "released savepoint"]

    called.clear()
    async with database.unit_of_work(connection=db_connection) as uow:
        uow.after_commit(lambda: called.append("never"))

    async def fails() -> None:
        async with database.unit_of_work(connection=db_connection) as uow:
            uow.after_commit(lambda: called.append("never"))
            raise LookupError

    with pytest.raises(LookupError):
        await fails()
    assert called == []


async def test_failing_after_commit_callbacks_do_not_stop_the_others(
    database: Database, emails: list[str]
) -> None:
    emails.append(email := _email())
    called: list[str] = []

    def fails() -> None:
        raise RuntimeError("cache down")

    async def fails_too() -> None:
        raise KeyError("x")

    async def commit() -> None:
        async with database.unit_of_work() as uow:
            uow.session.add(Author(email=email, name="Ada"))
            uow.after_commit(fails)
            uow.after_commit(lambda: called.append("ran"))
            uow.after_commit(fails_too)
            await uow.commit()

    with pytest.raises(AfterCommitError, match="committed, but 2 of 3") as caught:
        await commit()
    assert called == ["ran"]
    assert [type(e) for e in caught.value.errors] == [RuntimeError, KeyError]
    assert caught.value.__cause__ is caught.value.errors[0]
    assert await _authors(database, email) == 1


# -- repositories -------------------------------------------------------------


async def test_repositories_are_attributes_sharing_the_session(database: Database) -> None:
    expected = {
        "authors": AuthorRepository,
        "books": BookRepository,
        "catalog": CatalogRepository,
        "genres": GenreRepository,
    }
    async with database.unit_of_work() as uow:
        assert type(uow) is LibraryWork
        for name, cls in expected.items():
            repository = getattr(uow, name)
            assert type(repository) is cls
            assert repository is getattr(uow, name)
            assert repository.session is uow.session
        author = await uow.authors.add(Author(email=_email(), name="Ada"))
        assert await uow.authors.get_or_none(author.id) is author


# -- roles and claims of the service's own ------------------------------------------


@pytest.fixture
async def drafts(database: Database) -> AsyncIterator[tuple[int, set[str]]]:
    """A committed author with a draft and a published book: (author id, their isbns)."""
    tag = uuid.uuid4().hex
    async with database.unit_of_work() as uow:
        author = await uow.authors.add(Author(email=f"roles-{tag}@example.com", name="Ada"))
        statuses = {f"draft-{tag}": BookStatus.DRAFT, f"published-{tag}": BookStatus.PUBLISHED}
        await uow.books.add_many(
            [
                Book(author_id=author.id, isbn=isbn, title=isbn, price_cents=1, status=status)
                for isbn, status in statuses.items()
            ]
        )
        await uow.commit()
    yield author.id, set(statuses)
    async with database.unit_of_work() as uow:
        await uow.books.delete_where(author_id=author.id)
        await uow.authors.delete(author.id)
        await uow.commit()


async def test_a_role_and_claims_setting_of_its_own_reach_the_policies(
    db: Database, drafts: tuple[int, set[str]]
) -> None:
    """The reader sees published books, and drafts of the author its ``library.claims``
    name: `Database(roles=..., claims_setting=...)` as the library's migration expects."""
    author_id, isbns = drafts

    async def visible(**options: Any) -> set[str]:
        async with db.unit_of_work(read_only=True, **options) as uow:
            rows = await uow.session.scalars(select(Book.isbn).where(Book.author_id == author_id))
            return set(rows)

    published = {isbn for isbn in isbns if isbn.startswith("published")}
    assert await visible() == isbns  # no role: the table's owner bypasses the policy
    assert await visible(role="reader") == published
    assert await visible(role="reader", claims={"sub": "0"}) == published
    assert await visible(role="reader", claims={"sub": str(author_id)}) == isbns
    assert await visible() == isbns  # nothing outlived its transaction


async def test_a_role_the_server_lacks_is_refused_by_its_public_name(migrated_url: str) -> None:
    async with Database(migrated_url, roles={"ghost": "harbordb_no_such_role"}) as db:
        with pytest.raises(ConfigurationError, match=r"role 'ghost' maps to database role"):
            async with db.unit_of_work(role="ghost") as uow:
                await uow.session.execute(text("SELECT 1"))


async def test_a_role_the_user_may_not_assume_is_refused_by_its_public_name(
    migrated_url: str, database: Database
) -> None:
    """42501: the connecting user is not a member of the database role."""
    suffix = uuid.uuid4().hex[:8]
    user, target = f"harbordb_user_{suffix}", f"harbordb_target_{suffix}"
    async with database.engine.connect() as admin:
        await admin.execute(text(f'CREATE ROLE "{user}" LOGIN'))
        await admin.execute(text(f'CREATE ROLE "{target}"'))
        await admin.commit()
    try:
        url = migrated_url.replace("postgres@", f"{user}@", 1)
        async with Database(url, pooler="none", roles={"auditor": target}) as db:
            with pytest.raises(
                PermissionDenied, match=r"role 'auditor': the connecting user"
            ) as caught:
                async with db.unit_of_work(role="auditor"):
                    pass
            assert caught.value.sqlstate == "42501"
            async with db.unit_of_work() as uow:  # the connection is fine for the next one
                assert (await uow.session.execute(text("SELECT current_user"))).scalar() == user
    finally:
        async with database.engine.connect() as admin:
            await admin.execute(text(f'DROP ROLE "{user}"'))
            await admin.execute(text(f'DROP ROLE "{target}"'))
            await admin.commit()
