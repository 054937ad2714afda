"""Arrow Flight SQL through the ADBC driver and pyarrow.flight."""

import json

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as fl
import pytest


def test_adbc_query_and_parameters(server):
    with flightsql.connect(server.flight_uri) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM customers")
            assert cur.fetchone() == (1000,)
            cur.execute("SELECT customer_id, plan FROM customers WHERE customer_id = ?", parameters=(7,))
            rows = cur.fetchall()
            assert len(rows) == 1 and rows[0][0] == 7
            cur.execute("SELECT * FROM daily_sales ORDER BY day, store")
            table = cur.fetch_arrow_table()
            assert table.num_rows == 365 * 3
            assert table.schema.names == ["day", "store", "sales"]


def test_adbc_ddl_and_metadata(server):
    with flightsql.connect(server.flight_uri) as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE flight_t AS SELECT 1 AS a, 'x' AS b")
            cur.execute("SELECT a, b FROM flight_t")
            assert cur.fetchall() == [(1, "x")]
        objects = conn.adbc_get_objects(depth="columns").read_all().to_pylist()
        names = {t["table_name"] for c in objects for s in c["catalog_db_schemas"] for t in s["db_schema_tables"]}
        assert {"customers", "flight_t"} <= names
        assert "TABLE" in conn.adbc_get_table_types()
        schema = conn.adbc_get_table_schema("customers")
        assert schema.names[:2] == ["customer_id", "plan"]


def test_adbc_explain(server):
    with flightsql.connect(server.flight_uri) as conn:
        with conn.cursor() as cur:
            cur.execute("EXPLAIN SELECT plan, count(*) FROM customers GROUP BY plan")
            plan = "\n".join(str(r[1]) for r in cur.fetchall())
            assert "Aggregate" in plan


def test_adbc_errors_leave_server_up(server):
    with flightsql.connect(server.flight_uri) as conn:
        with conn.cursor() as cur:
            with pytest.raises(Exception) as e:
                cur.execute("SELECT * FROM no_such_table")
            assert "no_such_table" in str(e.value)
            with pytest.raises(Exception):
                cur.execute("SELEKT")
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    assert server.alive()


def test_pyarrow_flight_streams_batches(server):
    from pyarrow.flight import FlightDescriptor
    client = fl.FlightClient(server.flight_uri)
    # CommandStatementQuery as an Any-wrapped protobuf, built by hand:
    # field 1 (query, string) inside arrow.flight.protocol.sql.CommandStatementQuery.
    query = b"SELECT v FROM (SELECT value AS v FROM generate_series(1, 100000))"
    inner = b"\x0a" + _varint(len(query)) + query
    type_url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    any_msg = b"\x0a" + _varint(len(type_url)) + type_url + b"\x12" + _varint(len(inner)) + inner
    info = client.get_flight_info(FlightDescriptor.for_command(any_msg))
    assert info.schema.names == ["v"]
    reader = client.do_get(info.endpoints[0].ticket)
    batches = 0
    rows = 0
    for chunk in reader:
        batches += 1
        rows += chunk.data.num_rows
    assert rows == 100000
    assert batches > 1, "results must stream as several batches"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _statement_info(client, sql: str):
    from pyarrow.flight import FlightDescriptor
    query = sql.encode()
    inner = b"\x0a" + _varint(len(query)) + query
    type_url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    any_msg = b"\x0a" + _varint(len(type_url)) + type_url + b"\x12" + _varint(len(inner)) + inner
    return client.get_flight_info(FlightDescriptor.for_command(any_msg))


def test_adbc_settings_persist_across_calls(server):
    with flightsql.connect(server.flight_uri) as conn:
        with conn.cursor() as cur:
            cur.execute("SET datafusion.execution.batch_size = 7")
            cur.execute("SELECT v FROM (SELECT value AS v FROM generate_series(1, 20))")
            table = cur.fetch_arrow_table()
            assert table.num_rows == 20
            assert max(len(b) for b in table.to_batches()) <= 7, "the session's batch size holds"
    # Another client has its own session.
    with flightsql.connect(server.flight_uri) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT v FROM (SELECT value AS v FROM generate_series(1, 20))")
            assert max(len(b) for b in cur.fetch_arrow_table().to_batches()) > 7


def test_adbc_query_bound_with_several_parameter_rows(server):
    with flightsql.connect(server.flight_uri) as conn:
        with conn.cursor() as cur:
            params = pa.record_batch([pa.array([3, 5, 8], pa.int64())], names=["p"])
            cur.execute("SELECT customer_id FROM customers WHERE customer_id = ?", parameters=params)
            assert sorted(r[0] for r in cur.fetchall()) == [3, 5, 8]
            cur.execute("CREATE TABLE flight_many (a BIGINT, b VARCHAR)")
            cur.executemany("INSERT INTO flight_many VALUES (?, ?)", [(1, "x"), (2, "y"), (3, "z")])
            cur.execute("SELECT a, b FROM flight_many ORDER BY a")
            assert cur.fetchall() == [(1, "x"), (2, "y"), (3, "z")]


def test_ticket_names_a_plan_that_ddl_invalidates(server):
    client = fl.FlightClient(server.flight_uri)
    with flightsql.connect(server.flight_uri) as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE flight_gone AS SELECT 1 AS a")
    info = _statement_info(client, "SELECT a FROM flight_gone")
    assert info.schema.names == ["a"]
    # The ticket is a handle, not SQL text.
    assert b"flight_gone" not in info.endpoints[0].ticket.ticket
    assert client.do_get(info.endpoints[0].ticket).read_all().num_rows == 1
    # DDL changes what the name resolves to: the cached plan is planned again, and fails.
    with flightsql.connect(server.flight_uri) as conn:
        with conn.cursor() as cur:
            cur.execute("DROP TABLE flight_gone")
    with pytest.raises(pa.lib.ArrowException) as e:
        client.do_get(info.endpoints[0].ticket).read_all()
    assert "flight_gone" in str(e.value)
    # An unknown handle is NOT_FOUND with a hint.
    bogus = fl.Ticket(info.endpoints[0].ticket.ticket[:-4] + b"\x00\x00\x00\x00")
    with pytest.raises(pa.lib.ArrowException) as e:
        client.do_get(bogus).read_all()
    assert "run the statement again" in str(e.value) or "invalid" in str(e.value)
    assert server.alive()


def test_adbc_series_detector_from_labels(server):
    """A series detector trained and used over Flight SQL: the alerting rule is a model, its
    output an Arrow table with the anomaly columns."""
    with flightsql.connect(server.flight_uri) as conn:
        with conn.cursor() as cur:
            cur.execute(
                "CREATE OR REPLACE MODEL flight_alerts DETECT ANOMALIES IN latency_ms TIME ts BY host "
                "WITH (labels = 'incident', cooldown = 12) "
                "AS SELECT ts, host, latency_ms, CASE WHEN latency_ms > 200 THEN true "
                "WHEN ts < '2025-01-06' THEN false END AS incident FROM service_metrics"
            )
            cur.execute("SELECT * FROM ANOMALY('flight_alerts', TABLE service_metrics)")
            table = cur.fetch_arrow_table()
            assert table.schema.names == [
                "ts", "host", "latency_ms", "expected", "lower", "upper", "score", "novelty", "is_anomaly",
            ]
            assert table.schema.field("is_anomaly").type == pa.bool_()
            cur.execute("SELECT count(*) FROM service_metrics")
            assert table.num_rows == cur.fetchone()[0]
            alerts = table.filter(table["is_anomaly"]).select(["host", "latency_ms"]).to_pylist()
            assert sorted(a["host"] for a in alerts) == ["api-1", "api-2", "db-1"]
            assert all(a["latency_ms"] > 200 for a in alerts)
            cur.execute("SELECT algorithm, metrics FROM system.model_versions WHERE name = 'flight_alerts'")
            algorithm, metrics = cur.fetchone()
            assert algorithm == "series_detector"
            assert json.loads(metrics)["found"] == 3
            with pytest.raises(Exception, match="series detector"):
                cur.execute("SELECT ANOMALY('flight_alerts', latency_ms) FROM service_metrics")
