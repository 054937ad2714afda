"""Authentication through the Python clients: psycopg (SCRAM-SHA-256 over pgwire) and Flight SQL
(basic-auth handshake → bearer token) through pyarrow and the ADBC driver, against a server that
requires passwords."""

import adbc_driver_flightsql.dbapi as adbc
import psycopg
import pyarrow.flight as flight
import pytest

from conftest import Server

BOOT = "boot secret"


@pytest.fixture(scope="module")
def secured():
    s = Server(demo=True, env={"PROGNOS_PASSWORD": BOOT, "PROGNOS__TOKEN_TTL_S": "2"})
    with psycopg.connect(s.dsn + f" password='{BOOT}'", autocommit=True) as c:
        c.execute("CREATE USER analyst WITH PASSWORD 'analyst pw'")
        c.execute("GRANT SELECT ON customers TO analyst")
    yield s
    s.close()


def test_psycopg_logs_in_with_scram(secured):
    with psycopg.connect(secured.dsn.replace("user=prognos", "user=analyst")
                         + " password='analyst pw'") as c:
        assert c.execute("SELECT current_user").fetchone() == ("analyst",)
        assert c.info.parameter_status("is_superuser") == "off"
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(secured.dsn + " password='nope'")
    # libpq reports a failed connection without its SQLSTATE (tests/tests/auth.rs checks the
    # codes through tokio-postgres); the server's FATAL message reaches the client.
    assert 'password authentication failed for user "prognos"' in str(e.value)
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(secured.dsn.replace("user=prognos", "user=ghost") + " password='x'")
    assert 'role "ghost" does not exist' in str(e.value)
    assert secured.alive()


def adbc_connect(server, user=None, password=None):
    kwargs = {}
    if user is not None:
        kwargs = {"username": user, "password": password}
    return adbc.connect(server.flight_uri, db_kwargs=kwargs, autocommit=True)


def test_flight_sql_needs_a_handshake_and_runs_as_its_role(secured):
    with pytest.raises(Exception) as e:
        with adbc_connect(secured) as c, c.cursor() as cur:
            cur.execute("SELECT 1")
    assert "UNAUTHENTICATED" in str(e.value) or "Unauthenticated" in str(e.value)
    with pytest.raises(Exception) as e:
        with adbc_connect(secured, "analyst", "wrong") as c, c.cursor() as cur:
            cur.execute("SELECT 1")
    assert "password authentication failed" in str(e.value)

    with adbc_connect(secured, "analyst", "analyst pw") as c, c.cursor() as cur:
        cur.execute("SELECT current_user AS u, count(*) AS n FROM customers")
        row = cur.fetchone()
        assert row[0] == "analyst" and row[1] > 0


def test_flight_role_statement_is_refused_for_a_plain_role(secured):
    with adbc_connect(secured, "analyst", "analyst pw") as c, c.cursor() as cur:
        with pytest.raises(Exception) as e:
            cur.execute("CREATE ROLE x")
        assert "permission denied" in str(e.value)


def test_pyarrow_bearer_tokens_expire_and_are_bound_to_their_role(secured):
    import time

    client = flight.FlightClient(secured.flight_uri)
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token(b"analyst", b"bad")
    key, value = client.authenticate_basic_token(b"analyst", b"analyst pw")
    assert key == b"authorization" and value.startswith(b"Bearer ")
    options = flight.FlightCallOptions(headers=[(key, value)])
    list(client.list_actions(options))  # any call with the token is let through
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token(b"ghost", b"x")
    with pytest.raises(flight.FlightUnauthenticatedError):
        list(client.list_actions(flight.FlightCallOptions(headers=[(b"authorization", b"Bearer forged")])))
    time.sleep(2.5)  # PROGNOS__TOKEN_TTL_S = 2
    with pytest.raises(flight.FlightUnauthenticatedError) as e:
        list(client.list_actions(options))
    assert "expired" in str(e.value)
    with adbc_connect(secured, "analyst", "analyst pw") as c, c.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


def make_certificates(d):
    """A CA and a server certificate for localhost / 127.0.0.1 signed by it (openssl)."""
    import subprocess

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test ca",
        "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr")
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem")
    return d / "ca.pem", d / "server.pem", d / "server.key"


def test_flight_sql_and_psycopg_over_tls(tmp_path):
    ca, cert, key = make_certificates(tmp_path)
    s = Server(env={"PROGNOS_PASSWORD": BOOT, "PROGNOS__TLS__CERT_FILE": str(cert),
                    "PROGNOS__TLS__KEY_FILE": str(key)})
    try:
        port = s.flight.rsplit(":", 1)[1]
        uri = f"grpc+tls://localhost:{port}"
        client = flight.FlightClient(uri, tls_root_certs=ca.read_bytes())
        token = client.authenticate_basic_token(b"prognos", BOOT.encode())
        assert token[1].startswith(b"Bearer ")
        with adbc.connect(uri, db_kwargs={
                "username": "prognos", "password": BOOT,
                "adbc.flight.sql.client_option.tls_root_certs": ca.read_text()},
                autocommit=True) as c, c.cursor() as cur:
            cur.execute("SELECT 6 * 7")
            assert cur.fetchone() == (42,)
        # Plain gRPC is not served on a TLS port.
        plain = flight.FlightClient(f"grpc://localhost:{port}")
        with pytest.raises(flight.FlightError):
            plain.authenticate_basic_token(b"prognos", BOOT.encode())
        dsn = (f"host=localhost port={s.pg_port} user=prognos dbname=prognos password='{BOOT}' "
               f"sslmode=verify-full sslrootcert={ca}")
        with psycopg.connect(dsn) as c:
            assert c.info.pgconn.ssl_in_use
            assert c.execute("SELECT current_user").fetchone() == ("prognos",)
    finally:
        s.close()


def test_a_ticket_replayed_by_another_role_is_refused(secured):
    from pyarrow.flight import FlightDescriptor

    with psycopg.connect(secured.dsn + f" password='{BOOT}'", autocommit=True) as c:
        c.execute("CREATE USER IF NOT EXISTS other WITH PASSWORD 'other pw'")
    analyst = flight.FlightClient(secured.flight_uri)
    a_token = analyst.authenticate_basic_token(b"analyst", b"analyst pw")
    a_opts = flight.FlightCallOptions(headers=[a_token])
    other = flight.FlightClient(secured.flight_uri)
    o_opts = flight.FlightCallOptions(headers=[other.authenticate_basic_token(b"other", b"other pw")])
    # CommandStatementQuery as an Any-wrapped protobuf, built by hand (as test_flight does).
    query = b"SELECT count(*) AS n FROM customers"
    inner = b"\x0a" + bytes([len(query)]) + query
    type_url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    cmd = b"\x0a" + bytes([len(type_url)]) + type_url + b"\x12" + bytes([len(inner)]) + inner
    info = analyst.get_flight_info(FlightDescriptor.for_command(cmd), a_opts)
    ticket = info.endpoints[0].ticket
    assert analyst.do_get(ticket, a_opts).read_all().num_rows == 1
    with pytest.raises(flight.FlightError) as e:
        other.do_get(ticket, o_opts).read_all()
    assert "belongs to another role" in str(e.value)
    with pytest.raises(flight.FlightUnauthenticatedError):
        flight.FlightClient(secured.flight_uri).do_get(ticket).read_all()
