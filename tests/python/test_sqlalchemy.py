"""SQLAlchemy (both PostgreSQL dialects: psycopg 3 and psycopg2) and pandas against the real
server: connecting, the inspector's reflection, Table(autoload_with=…), pandas read_sql /
read_sql_table / to_sql round trips, and transactions (a failed block, savepoints)."""

import datetime as dt

import pandas as pd
import pytest
import sqlalchemy as sa

DIALECTS = ["psycopg", "psycopg2"]


@pytest.fixture(scope="module", params=DIALECTS)
def engine(request, server):
    url = f"postgresql+{request.param}://prognos@{server.pg_host}:{server.pg_port}/prognos"
    eng = sa.create_engine(url)
    yield eng
    eng.dispose()


def test_the_inspector_reflects_schemas_tables_and_columns(engine):
    insp = sa.inspect(engine)
    assert "public" in insp.get_schema_names()
    tables = insp.get_table_names()
    assert {"customers", "daily_sales", "service_metrics"} <= set(tables)
    # The registry's system tables live in `system`, off the search path, as PostgreSQL
    # would list them.
    assert "models" not in tables and "models" not in insp.get_view_names()
    cols = {c["name"]: c for c in insp.get_columns("daily_sales")}
    assert list(cols) == ["day", "store", "sales"]
    assert isinstance(cols["day"]["type"], sa.Date)
    assert isinstance(cols["store"]["type"], sa.Text)
    assert isinstance(cols["sales"]["type"], sa.Float)
    assert cols["sales"]["default"] is None
    assert insp.get_pk_constraint("daily_sales")["constrained_columns"] == []
    assert insp.get_indexes("daily_sales") == []
    assert insp.get_foreign_keys("daily_sales") == []
    assert insp.get_unique_constraints("daily_sales") == []
    assert insp.has_table("customers") and not insp.has_table("no_such_table")


def test_autoload_with_reflects_a_table_and_queries_it(engine):
    customers = sa.Table("customers", sa.MetaData(), autoload_with=engine)
    assert "monthly_charges" in customers.c
    with engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(customers)).scalar_one()
        top = conn.execute(
            sa.select(customers.c.customer_id)
            .order_by(customers.c.monthly_charges.desc())
            .limit(3)
        ).all()
    assert n > 0 and len(top) == 3


def test_pandas_round_trips_a_frame(engine):
    name = f"frame_{engine.dialect.driver}"
    df = pd.DataFrame(
        {
            "id": [1, 2, 3],
            "score": [0.5, None, 2.25],
            "label": ["a", "b", None],
            "flag": [True, False, True],
            "at": [dt.datetime(2026, 1, 1, 12, 0), dt.datetime(2026, 1, 2), dt.datetime(2026, 1, 3)],
        }
    )
    df.to_sql(name, engine, index=False, if_exists="replace")
    cols = {c["name"]: c for c in sa.inspect(engine).get_columns(name)}
    assert cols["label"]["nullable"] is True
    back = pd.read_sql_table(name, engine).sort_values("id").reset_index(drop=True)
    assert list(back.columns) == list(df.columns)
    assert back["id"].tolist() == [1, 2, 3]
    assert back["score"].iloc[0] == 0.5 and pd.isna(back["score"].iloc[1])
    assert back["label"].tolist()[:2] == ["a", "b"] and pd.isna(back["label"].iloc[2])
    assert back["flag"].tolist() == [True, False, True]
    assert back["at"].iloc[0] == pd.Timestamp("2026-01-01 12:00")
    # Append, then replace.
    df.head(1).to_sql(name, engine, index=False, if_exists="append")
    assert pd.read_sql(f"SELECT count(*) AS n FROM {name}", engine)["n"][0] == 4
    df.head(2).to_sql(name, engine, index=False, if_exists="replace")
    assert pd.read_sql(f"SELECT count(*) AS n FROM {name}", engine)["n"][0] == 2


def test_a_failed_transaction_leaves_nothing(engine):
    name = f"half_{engine.dialect.driver}"
    df = pd.DataFrame({"id": list(range(100))})
    with pytest.raises(sa.exc.DBAPIError):
        with engine.begin() as conn:
            df.to_sql(name, conn, index=False)
            assert conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one() == 100
            conn.execute(sa.text("SELECT * FROM no_such_table"))
    assert not sa.inspect(engine).has_table(name)


def test_savepoints_roll_back_the_inner_block_only(engine):
    name = f"nested_{engine.dialect.driver}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {name} (id BIGINT)"))
        conn.execute(sa.text(f"INSERT INTO {name} VALUES (1)"))
        inner = conn.begin_nested()
        conn.execute(sa.text(f"INSERT INTO {name} VALUES (2)"))
        inner.rollback()
        with conn.begin_nested():
            conn.execute(sa.text(f"INSERT INTO {name} VALUES (3)"))
    with engine.connect() as conn:
        ids = conn.execute(sa.text(f"SELECT id FROM {name} ORDER BY id")).scalars().all()
    assert ids == [1, 3]


def test_a_failed_statement_aborts_the_block_until_rollback(engine):
    with engine.connect() as conn:
        with pytest.raises(sa.exc.DBAPIError):
            conn.execute(sa.text("SELECT * FROM no_such_table"))
        with pytest.raises(sa.exc.DBAPIError) as aborted:
            conn.execute(sa.text("SELECT 1"))
        orig = aborted.value.orig
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        assert sqlstate == "25P02"
        conn.rollback()
        assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
