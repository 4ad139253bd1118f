"""The migration runner on both backends: a fresh database ends at the latest version with
exactly ``schema.py``'s shape; running again changes nothing; a database made before
migrations existed is adopted; a later step runs once; many threads and two processes
migrating one fresh database at once apply each step exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Column, Connection, Engine, Integer, MetaData, Table, inspect, select, text

from cerver.store import db, migrations, schema
from cerver.store.accounts import Accounts
from cerver.store.migrations import Migration, MigrationError, migrate, migrations_table
from tests.store import _worker

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def fresh(db_url: str) -> Iterator[Engine]:
    """An engine on the empty database, not yet migrated (``engine_for`` would migrate)."""
    engine = db.new_engine(db_url)
    yield engine
    engine.dispose()


def _applied(engine: Engine) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(migrations_table.c.version, migrations_table.c.name).order_by(
                migrations_table.c.version
            )
        )
        return [(r.version, r.name) for r in rows]


def _shape(engine: Engine, tables: list[str]) -> dict[str, Any]:
    """What matters of a table, as the database reports it."""
    found = inspect(engine)
    shape: dict[str, Any] = {}
    for name in tables:
        columns = {
            c["name"]: (
                c["type"].python_type,
                getattr(c["type"], "length", None),
                c["nullable"],
            )
            for c in found.get_columns(name)
        }
        unique: set[tuple[str | None, ...]] = {
            tuple(u["column_names"]) for u in found.get_unique_constraints(name)
        }
        unique |= {tuple(i["column_names"]) for i in found.get_indexes(name) if i["unique"]}
        shape[name] = {
            "columns": columns,
            "pk": tuple(found.get_pk_constraint(name)["constrained_columns"]),
            "indexes": {
                i["name"]: tuple(i["column_names"])
                for i in found.get_indexes(name)
                if not i["unique"]
            },
            "unique": unique,
            "fks": {
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in found.get_foreign_keys(name)
            },
        }
    return shape


def _declared(table: Table) -> dict[str, Any]:
    return {
        "columns": {
            c.name: (c.type.python_type, getattr(c.type, "length", None), c.nullable)
            for c in table.columns
        },
        "pk": tuple(c.name for c in table.primary_key.columns),
        "indexes": {i.name: tuple(c.name for c in i.columns) for i in table.indexes},
        "unique": {(c.name,) for c in table.columns if c.unique},
        "fks": {
            ((f.parent.name,), f.column.table.name, (f.column.name,)) for f in table.foreign_keys
        },
    }


def test_fresh_database_reaches_the_latest_version(fresh: Engine) -> None:
    assert migrate(fresh) == migrations.LATEST_VERSION
    assert _applied(fresh) == [(m.version, m.name) for m in migrations.MIGRATIONS]
    with fresh.connect() as conn:
        assert migrations.current_version(conn) == migrations.LATEST_VERSION


def test_migrated_schema_is_what_schema_py_declares(fresh: Engine) -> None:
    migrate(fresh)
    names = sorted(schema.metadata.tables)
    assert set(inspect(fresh).get_table_names()) == {*names, migrations_table.name}
    assert _shape(fresh, names) == {n: _declared(schema.metadata.tables[n]) for n in names}


def test_migrate_is_idempotent_and_keeps_data(fresh: Engine) -> None:
    migrate(fresh)
    account = Accounts(fresh).get_or_create("alice")
    for _ in range(3):
        assert migrate(fresh) == migrations.LATEST_VERSION
    assert _applied(fresh) == [(m.version, m.name) for m in migrations.MIGRATIONS]
    assert Accounts(fresh).get_or_create("alice") == account


def test_a_database_from_before_migrations_is_adopted(fresh: Engine) -> None:
    schema.metadata.create_all(fresh)  # what engine_for used to do
    account = Accounts(fresh).get_or_create("alice")
    assert migrate(fresh) == migrations.LATEST_VERSION
    assert _applied(fresh)[0] == (1, "initial schema")
    assert Accounts(fresh).get_or_create("alice") == account


def test_a_later_step_runs_once_in_order(fresh: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    migrate(fresh)
    calls: list[int] = []
    base = migrations.LATEST_VERSION

    def add_scratch(conn: Connection) -> None:
        calls.append(base + 1)
        Table("scratch", MetaData(), Column("id", Integer, primary_key=True)).create(conn)

    def fill_scratch(conn: Connection) -> None:
        calls.append(base + 2)
        conn.execute(text("INSERT INTO scratch (id) VALUES (7)"))

    base = migrations.LATEST_VERSION  # the steps under test come after the real ones
    steps = (
        *migrations.MIGRATIONS,
        Migration(base + 1, "scratch table", add_scratch),
        Migration(base + 2, "scratch row", fill_scratch),
    )
    monkeypatch.setattr(migrations, "MIGRATIONS", steps)
    monkeypatch.setattr(migrations, "LATEST_VERSION", base + 2)
    assert migrate(fresh) == base + 2
    assert migrate(fresh) == base + 2
    assert calls == [base + 1, base + 2]
    assert [v for v, _ in _applied(fresh)] == list(range(1, base + 3))
    with fresh.connect() as conn:
        assert conn.execute(text("SELECT id FROM scratch")).scalar_one() == 7


def test_a_failing_step_leaves_the_database_where_it_was(
    fresh: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(fresh)

    def half_then_fail(conn: Connection) -> None:
        Table("half", MetaData(), Column("id", Integer, primary_key=True)).create(conn)
        raise RuntimeError("step failed")

    base = migrations.LATEST_VERSION
    monkeypatch.setattr(
        migrations,
        "MIGRATIONS",
        (*migrations.MIGRATIONS, Migration(base + 1, "fails", half_then_fail)),
    )
    monkeypatch.setattr(migrations, "LATEST_VERSION", base + 1)
    with pytest.raises(RuntimeError, match="step failed"):
        migrate(fresh)
    assert [v for v, _ in _applied(fresh)] == list(range(1, base + 1))
    assert "half" not in inspect(fresh).get_table_names()


def test_a_newer_database_is_refused(db_url: str, fresh: Engine) -> None:
    migrate(fresh)
    with fresh.begin() as conn:
        conn.execute(migrations_table.insert().values(version=99, name="future", applied_at=0.0))
    with pytest.raises(MigrationError, match="version 99"):
        migrate(fresh)
    with pytest.raises(MigrationError):
        db.engine_for(db_url)
    assert db_url not in db._ENGINES, "a refused engine is not cached"


def test_concurrent_migrations_apply_each_step_once(db_url: str, fresh: Engine) -> None:
    # Two processes with three fresh engines each, all migrating the empty database at once.
    results = _worker.spawn([["migrate", db_url, 3] for _ in range(2)])
    assert results == [[migrations.LATEST_VERSION] * 3] * 2
    assert _applied(fresh) == [(m.version, m.name) for m in migrations.MIGRATIONS]
    assert set(schema.metadata.tables) <= set(inspect(fresh).get_table_names())
