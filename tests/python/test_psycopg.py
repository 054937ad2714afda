"""psycopg 3 against the real server: server-side parameters, COPY, errors, Grafana's SQL."""

import datetime as dt
from decimal import Decimal

import psycopg
import pytest
from psycopg import errors


def test_server_side_parameters(server):
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE py_t (id BIGINT, name VARCHAR, score DOUBLE)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO py_t VALUES (%s, %s, %s)",
                            [(1, "a", 0.5), (2, "b", None), (3, None, 2.5)])
            cur.execute("SELECT id, name, score FROM py_t WHERE id >= %s ORDER BY id", (2,))
            assert cur.fetchall() == [(2, "b", None), (3, None, 2.5)]
            # binary results
            cur = conn.cursor(binary=True)
            cur.execute("SELECT count(*), sum(score) FROM py_t")
            assert cur.fetchone() == (3, 3.0)


def test_copy_from_and_to(server):
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE py_copy (id BIGINT, city VARCHAR)")
        with conn.cursor() as cur:
            with cur.copy("COPY py_copy (id, city) FROM STDIN") as copy:
                for row in [(1, "Oslo"), (2, "Lima"), (3, None)]:
                    copy.write_row(row)
            assert cur.execute("SELECT count(*) FROM py_copy").fetchone() == (3,)
            assert cur.execute("SELECT city FROM py_copy WHERE id = 3").fetchone() == (None,)
            out = []
            with cur.copy("COPY (SELECT id, city FROM py_copy ORDER BY id) TO STDOUT") as copy:
                for row in copy.rows():
                    out.append(row)
            assert out == [("1", "Oslo"), ("2", "Lima"), ("3", None)]


COPY_ROWS = [
    (1, 0.5, "tab\there", True, dt.date(2026, 1, 31), dt.datetime(2026, 1, 31, 12, 34, 56, 789000),
     Decimal("1234.56"), b"\x00\xff"),
    (2, None, "back\\slash\nnewline", False, None, None, Decimal("-0.01"), None),
    (3, -1e20, "", None, dt.date(1999, 12, 31), dt.datetime(1970, 1, 1), None, b""),
]
COPY_TABLE = ("CREATE TABLE {} (id BIGINT, f DOUBLE PRECISION, s TEXT, b BOOLEAN, d DATE, "
              "ts TIMESTAMP, n DECIMAL(10, 2), raw BYTEA)")
COPY_CSV = (
    '1,0.5,tab\there,t,2026-01-31,2026-01-31 12:34:56.789,1234.56,\\x00ff\n'
    '2,,"back\\slash\nnewline",f,,,-0.01,\n'
    '3,-1e+20,"",,1999-12-31,1970-01-01 00:00:00,,\\x\n'
)
COPY_TYPES = ["int8", "float8", "text", "bool", "date", "timestamp", "numeric", "bytea"]


@pytest.mark.parametrize("fmt", ["text", "csv", "binary"])
def test_copy_round_trips_every_type_in_each_format(server, fmt):
    table = f"py_copy_{fmt}"
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(COPY_TABLE.format(table))
        with conn.cursor() as cur:
            with cur.copy(f"COPY {table} FROM STDIN (FORMAT {fmt})") as copy:
                if fmt == "csv":
                    # psycopg writes rows in text or binary layout only: CSV goes as bytes.
                    copy.write(COPY_CSV)
                else:
                    if fmt == "binary":
                        copy.set_types(COPY_TYPES)
                    for row in COPY_ROWS:
                        copy.write_row(row)
            back = cur.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
            assert [tuple(r) for r in back] == COPY_ROWS
            query = f"COPY (SELECT * FROM {table} ORDER BY id) TO STDOUT (FORMAT {fmt})"
            with cur.copy(query) as copy:
                if fmt == "csv":
                    # psycopg parses text and binary rows only: CSV is checked as bytes.
                    assert b"".join(bytes(c) for c in copy) == COPY_CSV.encode()
                else:
                    copy.set_types(COPY_TYPES)
                    assert list(copy.rows()) == COPY_ROWS


def test_bad_copy_data_gets_sqlstates_and_the_server_keeps_serving(server):
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE py_copy_bad (id BIGINT, s TEXT)")
        with conn.cursor() as cur:
            with pytest.raises(errors.InvalidTextRepresentation):
                with cur.copy("COPY py_copy_bad FROM STDIN (FORMAT binary)") as copy:
                    copy.write(b"not a binary copy stream")
            with pytest.raises(errors.InvalidTextRepresentation):
                with cur.copy("COPY py_copy_bad FROM STDIN (FORMAT csv)") as copy:
                    copy.write(b'1,"unterminated\n')
            with pytest.raises(errors.InvalidTextRepresentation):
                with cur.copy("COPY py_copy_bad FROM STDIN") as copy:
                    copy.write(b"one\tfield\n")
            with pytest.raises(errors.InvalidParameterValue):
                cur.execute("COPY py_copy_bad FROM STDIN (FORMAT xml)")
            assert cur.execute("SELECT count(*) FROM py_copy_bad").fetchone() == (0,)


def test_copy_text_output_is_postgres_text(server):
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        with conn.cursor() as cur:
            data = b""
            with cur.copy("COPY (SELECT 1.5::DOUBLE PRECISION AS f, 'a\tb' AS s, NULL AS n, "
                          "DATE '2026-01-31' AS d, true AS b) TO STDOUT") as copy:
                for chunk in copy:
                    data += bytes(chunk)
            assert data == b"1.5\ta\\tb\t\\N\t2026-01-31\tt\n"
            data = b""
            with cur.copy("COPY (SELECT '' AS e, NULL AS n, 'x,y' AS q) TO STDOUT (FORMAT csv, HEADER)") as copy:
                for chunk in copy:
                    data += bytes(chunk)
            assert data == b'e,n,q\n"",,"x,y"\n'


class Rows:
    """The first row of a libpq result, as text, like a cursor's fetchone."""

    def __init__(self, res):
        self.res = res

    def fetchone(self):
        return tuple(int(self.res.get_value(0, i)) for i in range(self.res.nfields))


@pytest.mark.parametrize("protocol", ["simple", "extended", "prepared"])
def test_ready_for_query_reports_the_block_state(server, protocol):
    """ReadyForQuery says I / T / E as PostgreSQL does, and ROLLBACK TO SAVEPOINT brings a
    failed block back to T (simple query protocol, extended, extended with a named statement)."""
    from psycopg.pq import ExecStatus, TransactionStatus as S

    with psycopg.connect(server.dsn, autocommit=True) as conn:
        status = lambda: conn.info.transaction_status

        def run(sql):
            if protocol != "simple":
                return conn.execute(sql, prepare=protocol == "prepared")
            # libpq's PQexec: one Query message, answered by one ReadyForQuery.
            res = conn.pgconn.exec_(sql.encode())
            if res.status == ExecStatus.FATAL_ERROR:
                raise errors.lookup(res.error_field(psycopg.pq.DiagnosticField.SQLSTATE).decode())
            return Rows(res)

        assert status() == S.IDLE
        run("BEGIN")
        assert status() == S.INTRANS
        run("SAVEPOINT a")
        with pytest.raises(errors.UndefinedTable):
            run("SELECT * FROM no_such_table")
        assert status() == S.INERROR
        with pytest.raises(errors.InFailedSqlTransaction):
            run("SELECT 1")
        assert status() == S.INERROR
        run("ROLLBACK TO SAVEPOINT a")
        assert status() == S.INTRANS
        assert run("SELECT 1").fetchone() == (1,)
        assert status() == S.INTRANS
        run("COMMIT")
        assert status() == S.IDLE
        run("BEGIN")
        with pytest.raises(errors.UndefinedTable):
            run("SELECT * FROM no_such_table")
        assert status() == S.INERROR
        run("ROLLBACK")
        assert status() == S.IDLE


def test_errors_have_sqlstates(server):
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        with pytest.raises(errors.SyntaxError):
            conn.execute("SELEKT 1")
        with pytest.raises(errors.UndefinedTable):
            conn.execute("SELECT * FROM nope")
        with pytest.raises(errors.UndefinedColumn):
            conn.execute("SELECT nope FROM customers")
        with pytest.raises(errors.UndefinedFunction):
            conn.execute("SELECT nope(1)")
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_demo_data_is_there(server):
    with psycopg.connect(server.dsn) as conn:
        n = conn.execute("SELECT count(*) FROM customers").fetchone()[0]
        assert n == 1000
        stores = conn.execute("SELECT DISTINCT store FROM daily_sales ORDER BY store").fetchall()
        assert stores == [("north",), ("online",), ("south",)]


GRAFANA_TIME_SERIES = """
SELECT
  $__timeGroupAlias
  host AS metric,
  avg(latency_ms) AS value
FROM service_metrics
WHERE $__timeFilter
GROUP BY 1, 2
ORDER BY 1
"""


def expand_grafana_macros(sql: str) -> str:
    """The SQL Grafana's PostgreSQL data source sends after expanding its macros
    (pkg/tsdb/grafana-postgresql-datasource/macros.go) for a 1-hour interval."""
    return (sql
            .replace("$__timeGroupAlias",
                     "floor(extract(epoch from ts)/3600)*3600 AS \"time\",")
            .replace("$__timeFilter",
                     "ts BETWEEN '2025-01-01T00:00:00Z' AND '2025-01-03T00:00:00Z'"))


@pytest.mark.parametrize("prepare", [False, True])
def test_grafana_time_series_queries(server, prepare):
    # Grafana's backend uses both the simple (lib/pq) and the extended (pgx) protocol.
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        rows = conn.execute(expand_grafana_macros(GRAFANA_TIME_SERIES), prepare=prepare).fetchall()
        assert len(rows) == 49 * 3
        assert {r[1] for r in rows} == {"api-1", "api-2", "db-1"}
        # to_timestamp / date_trunc / now() - interval, as dashboards write them
        rows = conn.execute(
            "SELECT date_trunc('day', ts) AS time, max(latency_ms) FROM service_metrics "
            "WHERE ts >= to_timestamp(1735689600) AND ts < now() - interval '1 hour' "
            "GROUP BY 1 ORDER BY 1", prepare=prepare).fetchall()
        assert len(rows) == 7
        # connection test and metadata queries of the data source
        assert conn.execute("SELECT 1", prepare=prepare).fetchone() == (1,)
        tables = conn.execute(
            "SELECT quote_ident(table_name) FROM information_schema.tables "
            "WHERE table_schema = 'public' ORDER BY 1", prepare=prepare).fetchall()
        assert ("customers",) in tables
        cols = conn.execute(
            "SELECT quote_ident(column_name) AS column, data_type AS type "
            "FROM information_schema.columns WHERE table_name = 'service_metrics' "
            "ORDER BY ordinal_position", prepare=prepare).fetchall()
        assert [c[0] for c in cols] == ["ts", "host", "latency_ms"]
        sp = conn.execute("SELECT current_setting('search_path')", prepare=prepare).fetchone()
        assert sp == ("public",)


# Grafana's SQL builder restricts metadata queries to the schemas on the search path.
SEARCH_PATH_SCHEMAS = """
  SELECT CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
  FROM generate_series(
         array_lower(string_to_array(current_setting('search_path'),','),1),
         array_upper(string_to_array(current_setting('search_path'),','),1)
       ) AS i,
       string_to_array(current_setting('search_path'),',') s
"""


@pytest.mark.parametrize("prepare", [False, True])
def test_grafana_editor_metadata_queries(server, prepare):
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        version = conn.execute(
            "SELECT current_setting('server_version_num')::int/100 AS version",
            prepare=prepare).fetchone()
        assert version == (1600,)
        tables = conn.execute(
            f"""SELECT CASE WHEN quote_ident(table_schema) IN ({SEARCH_PATH_SCHEMAS})
                       THEN quote_ident(table_name)
                       ELSE quote_ident(table_schema) || '.' || quote_ident(table_name) END AS "table"
                FROM information_schema.tables
                WHERE quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog')
                ORDER BY 1""", prepare=prepare).fetchall()
        assert ("service_metrics",) in tables
        cols = conn.execute(
            f"""SELECT quote_ident(column_name) AS "column", data_type AS "type"
                FROM information_schema.columns
                WHERE quote_ident(table_schema) IN ({SEARCH_PATH_SCHEMAS})
                  AND table_name = 'service_metrics'
                ORDER BY ordinal_position""", prepare=prepare).fetchall()
        assert cols == [("ts", "timestamp without time zone"), ("host", "text"),
                        ("latency_ms", "double precision")]
        # Correlated scalar subqueries over the catalog keep their values (Grafana's old editor
        # looks for a table with a timestamp column this way).
        metric = conn.execute(
            """SELECT table_name,
                 (SELECT min(column_name) FROM information_schema.columns c
                   WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name
                     AND udt_name IN ('timestamptz', 'timestamp')) AS time_column
               FROM information_schema.tables t
               WHERE t.table_name = 'service_metrics'""", prepare=prepare).fetchone()
        assert metric == ("service_metrics", "ts")
        # The ORDER BY … LIMIT 1 form is beyond DataFusion's subquery planner: a clear error,
        # never a silently wrong NULL.
        with pytest.raises(errors.FeatureNotSupported):
            conn.execute(
                """SELECT table_name,
                     (SELECT column_name FROM information_schema.columns c
                       WHERE c.table_name = t.table_name ORDER BY ordinal_position LIMIT 1)
                   FROM information_schema.tables t""", prepare=prepare)
