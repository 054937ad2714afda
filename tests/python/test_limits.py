"""Limits through the Python clients: `statement_timeout` over Flight SQL (ADBC) and psycopg."""

import time

import adbc_driver_flightsql.dbapi as adbc
import psycopg
import pytest


def test_statement_timeout_over_flight_sql_and_psycopg(server):
    with adbc.connect(server.flight_uri, autocommit=True) as c, c.cursor() as cur:
        cur.execute("SET statement_timeout = '300ms'")
        started = time.time()
        with pytest.raises(Exception) as e:
            cur.execute("SELECT pg_sleep(5)")
            cur.fetchall()
        assert "canceling statement due to statement timeout" in str(e.value)
        assert time.time() - started < 4
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    with psycopg.connect(server.dsn, autocommit=True) as c:
        c.execute("SET statement_timeout = 300")
        with pytest.raises(psycopg.errors.QueryCanceled) as e:
            c.execute("SELECT pg_sleep(5)")
        assert e.value.sqlstate == "57014"
        assert c.execute("SELECT 2").fetchone() == (2,)
    assert server.alive()


def test_result_size_limit_over_flight_sql_and_psycopg():
    from conftest import Server

    s = Server(demo=False, env={"PROGNOS__ENGINE__MAX_RESULT_MB": "1"})
    big = "SELECT repeat('x', 1000 + (value - value)) AS s FROM generate_series(1, 5000)"
    try:
        with adbc.connect(s.flight_uri, autocommit=True) as c, c.cursor() as cur:
            with pytest.raises(Exception) as e:
                cur.execute(big)
                cur.fetchall()
            assert "engine.max_result_mb" in str(e.value)
            cur.execute("SELECT count(*) AS n FROM generate_series(1, 5000)")
            assert cur.fetchone() == (5000,)
        with psycopg.connect(s.dsn, autocommit=True) as c:
            with pytest.raises(psycopg.errors.ProgramLimitExceeded):
                c.execute(big).fetchall()
            assert c.execute("SELECT 2").fetchone() == (2,)
        assert s.alive()
    finally:
        s.close()
