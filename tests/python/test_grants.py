"""Privileges through the Python clients, against a server that requires passwords: a
low-privilege role over psycopg (pgwire) and over Flight SQL (ADBC, pyarrow) gets
`42501` / PERMISSION_DENIED for every table and model it was not granted, lists none of them,
and gets exactly what a GRANT (directly or through a role) opens; a REVOKE reaches statements
it prepared before."""

import adbc_driver_flightsql.dbapi as adbc
import psycopg
import pytest

from conftest import Server

BOOT = "boot secret"


@pytest.fixture(scope="module")
def secured():
    s = Server(demo=True, env={"PROGNOS_PASSWORD": BOOT})
    with psycopg.connect(s.dsn + f" password='{BOOT}'", autocommit=True) as c:
        c.execute("CREATE TABLE sales AS SELECT * FROM (VALUES (1, 'north', 10.0), "
                  "(2, 'south', 20.0)) AS t(id, region, amount)")
        c.execute("CREATE MODEL churn PREDICT churned USING logistic "
                  "AS SELECT tenure_months, support_calls, churned FROM customers")
        c.execute("CREATE USER low WITH PASSWORD 'low pw'")
        c.execute("CREATE ROLE readers")
    yield s
    s.close()


def admin(server):
    return psycopg.connect(server.dsn + f" password='{BOOT}'", autocommit=True)


def low_pg(server):
    return psycopg.connect(server.dsn.replace("user=prognos", "user=low") + " password='low pw'",
                           autocommit=True)


def low_flight(server):
    return adbc.connect(server.flight_uri, db_kwargs={"username": "low", "password": "low pw"},
                        autocommit=True)


DENIED = [
    ("SELECT * FROM sales", "permission denied for table sales"),
    ("SELECT count(*) FROM customers c JOIN sales s ON true", "permission denied for table"),
    ("INSERT INTO sales VALUES (3, 'east', 1.0)", "permission denied for table sales"),
    ("SELECT PREDICT('churn', 3, 1)", "permission denied for model churn"),
    ("SELECT * FROM EVALUATE('churn', (SELECT 3 AS tenure_months, 1 AS support_calls, "
     "true AS churned))", "permission denied for model churn"),
    ("DROP TABLE sales", "must be owner of table sales"),
    ("CREATE MODEL m PREDICT y AS SELECT 1 AS x, 2 AS y", "permission denied to create models"),
]


def flight_tables(conn):
    objects = conn.adbc_get_objects(depth="tables", catalog_filter="prognos",
                                    db_schema_filter="public").read_all().to_pylist()
    names = set()
    for catalog in objects:
        for schema in catalog["catalog_db_schemas"] or []:
            for table in schema["db_schema_tables"] or []:
                names.add(table["table_name"])
    return names


def test_psycopg_low_role_is_denied_and_lists_nothing(secured):
    with low_pg(secured) as c:
        for sql, message in DENIED:
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
                c.execute(sql)
            assert message in str(e.value), sql
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with c.cursor().copy("COPY sales FROM STDIN") as copy:
                copy.write_row((9, "west", 1.0))
        tables = c.execute("SELECT table_name FROM information_schema.tables "
                           "WHERE table_schema = 'public'").fetchall()
        assert tables == []
        assert c.execute("SHOW MODELS").fetchall() == []
    assert secured.alive()


def test_flight_low_role_is_denied_and_lists_nothing(secured):
    with low_flight(secured) as conn:
        for sql, message in DENIED:
            with conn.cursor() as cur:
                with pytest.raises(Exception) as e:
                    cur.execute(sql)
                    cur.fetchall()
                text = str(e.value)
                assert message in text, (sql, text)
                assert "PermissionDenied" in text, (sql, text)
        assert flight_tables(conn) == set()
    with admin(secured) as a:
        assert {"customers", "sales"} <= {r[0] for r in a.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}


def test_grants_through_a_role_open_both_protocols_and_revoke_reaches_prepared(secured):
    with admin(secured) as a:
        a.execute("GRANT SELECT ON sales TO readers")
        a.execute("GRANT USAGE ON MODEL churn TO readers")
        a.execute("GRANT readers TO low")
    try:
        with low_pg(secured) as c:
            assert c.execute("SELECT count(*) FROM sales").fetchone() == (2,)
            assert c.execute("SELECT PREDICT('churn', 3, 1)").fetchone() is not None
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("SELECT count(*) FROM customers")
        with low_flight(secured) as conn:
            assert flight_tables(conn) == {"sales"}
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) AS n FROM sales")
                assert cur.fetchone() == (2,)
                # A statement prepared while the grant held is checked again at each run.
                cur.adbc_prepare("SELECT sum(amount) AS s FROM sales")
                cur.execute("SELECT sum(amount) AS s FROM sales")
                assert cur.fetchone() == (30.0,)
                with admin(secured) as a:
                    a.execute("REVOKE SELECT ON sales FROM readers")
                with pytest.raises(Exception) as e:
                    cur.execute("SELECT sum(amount) AS s FROM sales")
                    cur.fetchall()
                assert "permission denied for table sales" in str(e.value)
    finally:
        with admin(secured) as a:
            a.execute("REVOKE readers FROM low")


def test_masked_columns_reach_flight_and_psycopg_masked(secured):
    with admin(secured) as a:
        a.execute("CREATE TABLE cards AS SELECT * FROM (VALUES (1, '4111111111111111', "
                  "'alice@example.com')) AS t(id, card, email)")
        a.execute("CREATE MASKING POLICY cards_tail ON cards (card) USING partial(4)")
        a.execute("CREATE MASKING POLICY cards_email ON cards (email) USING hash")
        a.execute("GRANT SELECT ON cards TO low")
        assert a.execute("SELECT card FROM cards").fetchone() == ("4111111111111111",)
    with low_flight(secured) as conn, conn.cursor() as cur:
        cur.execute("SELECT card, email FROM cards")
        card, email = cur.fetchone()
        assert card == "************1111"
        assert len(email) == 32 and "@" not in email
    with low_pg(secured) as c:
        assert c.execute("SELECT card FROM cards").fetchone() == ("************1111",)
        with c.cursor().copy("COPY cards TO STDOUT") as copy:
            data = b"".join(bytes(chunk) for chunk in copy)
        assert b"4111111111111111" not in data and b"************1111" in data
    with admin(secured) as a:
        a.execute("GRANT UNMASK ON cards TO low")
    with low_flight(secured) as conn, conn.cursor() as cur:
        cur.execute("SELECT card FROM cards")
        assert cur.fetchone() == ("4111111111111111",)


def test_flight_statements_and_logins_reach_the_audit_log(secured):
    with low_flight(secured) as conn, conn.cursor() as cur:
        with pytest.raises(Exception):
            cur.execute("SELECT * FROM sales")
            cur.fetchall()
    with pytest.raises(Exception):
        with adbc.connect(secured.flight_uri, db_kwargs={"username": "low", "password": "bad"},
                          autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    with admin(secured) as a:
        refused = a.execute(
            "SELECT sqlstate, array_to_string(tables, ',') FROM system.audit_log "
            "WHERE protocol = 'flightsql' AND kind = 'statement' AND user_name = 'low' "
            "AND statement LIKE '%FROM sales%' AND outcome = 'error'").fetchall()
        assert ("42501", "public.sales") in refused
        kinds = {r[0] for r in a.execute(
            "SELECT kind FROM system.audit_log WHERE protocol = 'flightsql' "
            "AND user_name = 'low'").fetchall()}
        assert {"login", "login_failed"} <= kinds
