"""Model functions over both protocols: CREATE MODEL over psycopg (with NOTICE progress), then
PREDICT / PREDICT_PROBA give identical values over pgwire, Flight SQL (ADBC) and after a
prepared statement with parameters."""

import adbc_driver_flightsql.dbapi as flightsql
import psycopg

ARGS = "plan, tenure_months, monthly_charges, support_calls"
SCORE = (
    f"SELECT customer_id, PREDICT('churn_py', {ARGS}) AS label, "
    f"PREDICT_PROBA('churn_py', {ARGS}) AS p FROM customers ORDER BY customer_id"
)


def test_predict_is_identical_over_pgwire_and_flight(server):
    notices = []
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute(
            "CREATE OR REPLACE MODEL churn_py PREDICT churned USING gbdt "
            f"WITH (num_trees = 60) AS SELECT {ARGS}, churned FROM customers"
        )
        assert any("iteration" in n for n in notices), notices
        assert any('model "churn_py" version' in n for n in notices), notices
        pg_rows = conn.execute(SCORE).fetchall()
        # Extended protocol with a parameter, binary results.
        with conn.cursor(binary=True) as cur:
            cur.execute(
                f"SELECT PREDICT_PROBA('churn_py', {ARGS}) FROM customers WHERE customer_id = %s",
                (17,),
            )
            (p17,) = cur.fetchone()
    assert len(pg_rows) == 1000
    assert all(isinstance(r[1], bool) for r in pg_rows)
    assert abs(p17 - pg_rows[16][2]) == 0.0

    with flightsql.connect(server.flight_uri) as conn:
        cur = conn.cursor()
        cur.execute(SCORE)
        table = cur.fetch_arrow_table()
        cur.close()
    assert table.schema.field("label").type == "bool"
    assert table.schema.field("p").type == "double"
    flight_rows = list(zip(*(table.column(i).to_pylist() for i in range(3))))
    assert flight_rows == [tuple(r) for r in pg_rows]


def test_model_errors_over_flight_carry_messages(server):
    with flightsql.connect(server.flight_uri) as conn:
        cur = conn.cursor()
        try:
            cur.execute("SELECT PREDICT('no_such_model', 1)")
            raise AssertionError("expected an error")
        except Exception as e:  # noqa: BLE001 - the driver's error class varies by version
            assert "no_such_model" in str(e)
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
        cur.close()
