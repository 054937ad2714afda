"""Polars against the real server: read_database over psycopg and SQLAlchemy,
read_database_uri with ConnectorX (binary COPY) and ADBC, write_database with SQLAlchemy and
ADBC (binary COPY FROM), and the catalog a user lists tables and columns with."""

import polars as pl
import psycopg
import pytest
import sqlalchemy as sa


@pytest.fixture(scope="module")
def uri(server):
    return f"postgresql://prognos@{server.pg_host}:{server.pg_port}/prognos"


QUERY = "SELECT * FROM customers ORDER BY customer_id"


def test_read_database_paths_agree(uri):
    with psycopg.connect(uri) as conn:
        reference = pl.read_database(QUERY, conn)
    assert reference.height > 100
    engine = sa.create_engine(uri.replace("postgresql://", "postgresql+psycopg://"))
    assert pl.read_database(QUERY, engine).equals(reference)
    for backend in ["connectorx", "adbc"]:
        frame = pl.read_database_uri(QUERY, uri, engine=backend)
        assert frame.columns == reference.columns, backend
        assert frame.equals(reference), backend


def test_listing_schemas_tables_and_columns(uri):
    schemas = pl.read_database_uri(
        "SELECT schema_name FROM information_schema.schemata", uri, engine="adbc"
    )
    assert "public" in schemas["schema_name"].to_list()
    tables = pl.read_database_uri(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
        uri,
        engine="connectorx",
    )
    assert {"customers", "daily_sales"} <= set(tables["table_name"].to_list())
    cols = pl.read_database_uri(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'daily_sales' ORDER BY ordinal_position",
        uri,
        engine="adbc",
    )
    assert cols.rows() == [("day", "date"), ("store", "text"), ("sales", "double precision")]


@pytest.mark.parametrize("backend", ["sqlalchemy", "adbc"])
def test_write_database_round_trips(uri, backend):
    name = f"pl_written_{backend}"
    frame = pl.DataFrame(
        {
            "id": [1, 2, 3],
            "score": [0.5, None, -2.25],
            "label": ["a", None, "c\td"],
            "flag": [True, None, False],
        }
    )
    target = uri if backend == "adbc" else uri.replace("postgresql://", "postgresql+psycopg://")
    frame.write_database(name, target, engine=backend, if_table_exists="replace")
    back = pl.read_database_uri(f"SELECT * FROM {name} ORDER BY id", uri, engine="connectorx")
    assert back.rows() == frame.rows()
    frame.write_database(name, target, engine=backend, if_table_exists="append")
    n = pl.read_database_uri(f"SELECT count(*) AS n FROM {name}", uri, engine="adbc")
    assert n["n"][0] == 6
