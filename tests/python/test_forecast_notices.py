"""FORECAST's series policy reaches the client as NOTICEs (psycopg's notice handler): the
ad-hoc form over the simple and the extended protocol, and CREATE MODEL ... FORECAST."""

import psycopg

SETUP = """
CREATE TABLE IF NOT EXISTS notes_sales AS
SELECT CAST('2025-01-01' AS DATE) + CAST(v AS INT) AS day, 'a' AS store,
       100.0 + (v % 7) * 10 AS amount
FROM generate_series(0, 59) AS t(v) WHERE v <> 30;
"""
# Day 30 is missing (a gap filled by interpolation) and day 10 comes twice (averaged).
DUPLICATE = "INSERT INTO notes_sales VALUES (DATE '2025-01-11', 'a', 300.0)"
ADHOC = ("SELECT * FROM FORECAST(TABLE notes_sales, time => 'day', value => 'amount', "
         "id => 'store', horizon => 7)")


def collect(conn):
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    return notices


def test_forecast_series_policy_is_sent_as_notices(server):
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(SETUP)
        conn.execute(DUPLICATE)
        notices = collect(conn)
        rows = conn.execute(ADHOC).fetchall()
        assert len(rows) == 7
        assert any("duplicate" in n for n in notices), notices
        assert any("filled" in n or "gap" in n for n in notices), notices
        assert all(n.startswith("FORECAST: series of") for n in notices), notices

        # Extended protocol (prepared), and a fallback for a series too short for MSTL.
        notices.clear()
        with conn.cursor() as cur:
            cur.execute(ADHOC + " WHERE forecast > %s", (-1.0e9,), prepare=True)
            assert len(cur.fetchall()) == 7
        assert any("duplicate" in n for n in notices), notices
        notices.clear()
        conn.execute(ADHOC.replace("horizon => 7", "horizon => 7, method => 'mstl', "
                                   "season_length => 40")).fetchall()
        assert any("used instead" in n for n in notices), notices

        notices.clear()
        conn.execute("CREATE OR REPLACE MODEL notes_demand FORECAST amount TIME day BY store "
                     "WITH (horizon = 7) AS SELECT * FROM notes_sales")
        assert any("duplicate" in n for n in notices), notices
        assert any("fitting 1 series" in n for n in notices), notices


def test_a_large_forecast_is_streamed_with_a_notice(server):
    """Past 16 MiB of output an ad-hoc FORECAST stops collecting its rows (for the NOTICEs)
    and streams them; a NOTICE says so, and every row arrives."""
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS notes_wide AS "
            "SELECT CAST('2025-01-01' AS DATE) + CAST(v AS INT) AS day, s AS store, "
            "CAST(v % 7 + s AS DOUBLE) AS amount "
            "FROM generate_series(0, 59) AS t(v) CROSS JOIN generate_series(1, 4) AS st(s)")
        notices = collect(conn)
        q = ("SELECT * FROM FORECAST(TABLE notes_wide, time => 'day', value => 'amount', "
             "id => 'store', horizon => {h}, method => 'seasonal_naive', season_length => 7)")
        rows = conn.execute(q.format(h=100000)).fetchall()
        assert len(rows) == 400000
        assert any("streamed from here on" in n for n in notices), notices
        # Seasonal naive repeats the last week: day 60 + 7k of store 2 is day 53's value.
        week = {r[1]: r[2] for r in rows if r[0] == 2 and r[1].toordinal() % 7 == 0}
        assert len(set(week.values())) == 1, list(week.items())[:5]
        notices.clear()
        assert len(conn.execute(q.format(h=10)).fetchall()) == 40
        assert not any("streamed" in n for n in notices), notices
