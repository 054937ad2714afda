"""Hostile Flight SQL input: random and mutated commands, garbage and tampered tickets, unknown
actions. Every call must end in a clear Flight error (never INTERNAL / UNKNOWN, never a hang),
and the server must answer a well-formed query afterwards. A fixed seed and budget here; set
PROGNOS_FUZZ_ITERATIONS for a longer run (see benches/README.md, Fuzzing)."""

import os
import random

import pyarrow.flight as fl
import pytest

from test_flight import _statement_info, _varint

ITERATIONS = int(os.environ.get("PROGNOS_FUZZ_ITERATIONS", "300"))

# Flight SQL command type names (arrow.flight.protocol.sql.*), right and wrong.
COMMANDS = [
    "CommandStatementQuery", "CommandStatementUpdate", "CommandPreparedStatementQuery",
    "CommandGetTables", "CommandGetCatalogs", "CommandGetDbSchemas", "CommandGetSqlInfo",
    "CommandGetPrimaryKeys", "CommandGetXdbcTypeInfo", "TicketStatementQuery", "NoSuchCommand",
]


def _any(type_name: str, body: bytes) -> bytes:
    type_url = b"type.googleapis.com/arrow.flight.protocol.sql." + type_name.encode()
    return b"\x0a" + _varint(len(type_url)) + type_url + b"\x12" + _varint(len(body)) + body


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        what = rng.randrange(4)
        if what == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif what == 1 and b:
            del b[rng.randrange(len(b)):]
        elif what == 2:
            b[rng.randrange(len(b) + 1):0] = rng.randbytes(rng.randint(1, 16))
        else:
            b += b"\xff" * rng.randint(1, 8)
    return bytes(b)


def _expect_clean_error(call):
    """The call fails (or succeeds) with a Flight status other than INTERNAL / UNKNOWN."""
    try:
        result = call()
    except (fl.FlightInternalError, fl.FlightServerError) as e:
        pytest.fail(f"internal error: {e}")
    except fl.FlightError:
        return None
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid etc. for bad statuses
        name = type(e).__name__
        assert name in ("ArrowInvalid", "ArrowNotImplementedError", "ArrowKeyError",
                        "ArrowTypeError", "ArrowIndexError"), f"{name}: {e}"
        return None
    return result


def _rss_kib(pid: int) -> int:
    """The resident size of process `pid` in KiB (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_random_and_mutated_flight_input_gets_clean_errors(server):
    rng = random.Random(int(os.environ.get("PROGNOS_FUZZ_SEED", "20261207")))
    client = fl.FlightClient(server.flight_uri)
    good = _statement_info(client, "SELECT 1 AS one")
    good_ticket = good.endpoints[0].ticket.ticket
    for i in range(ITERATIONS):
        kind = rng.randrange(6)
        if kind == 0:
            cmd = rng.randbytes(rng.randint(0, 200))
            _expect_clean_error(lambda: client.get_flight_info(fl.FlightDescriptor.for_command(cmd)))
        elif kind == 1:
            body = b"\x0a" + _varint(12) + b"SELECT 1 + 1"
            cmd = _mutate(rng, _any(rng.choice(COMMANDS), body))
            _expect_clean_error(lambda: client.get_flight_info(fl.FlightDescriptor.for_command(cmd)))
        elif kind == 2:
            ticket = fl.Ticket(_mutate(rng, good_ticket))
            _expect_clean_error(lambda: client.do_get(ticket).read_all())
        elif kind == 3:
            ticket = fl.Ticket(rng.randbytes(rng.randint(0, 64)))
            _expect_clean_error(lambda: client.do_get(ticket).read_all())
        elif kind == 4:
            action = fl.Action(rng.choice(["CreatePreparedStatement", "ClosePreparedStatement",
                                           "BeginTransaction", "EndTransaction", "CancelQuery",
                                           "nope", ""]), rng.randbytes(rng.randint(0, 64)))
            _expect_clean_error(lambda: list(client.do_action(action)))
        else:
            desc = fl.FlightDescriptor.for_path(*[rng.choice(["a", "..", "x" * 300])
                                                  for _ in range(rng.randint(1, 3))])
            _expect_clean_error(lambda: client.get_flight_info(desc))
        if i % 50 == 0:
            assert server.alive(), f"server died at iteration {i}"
        if i == ITERATIONS // 3:
            warm = _rss_kib(server.proc.pid)
    assert server.alive()
    # Memory back near where it stood after warm-up: nothing hostile input touched is kept
    # (a quarter above for allocator slack, at most).
    end = _rss_kib(server.proc.pid)
    assert end <= warm + warm // 4 + 16 * 1024, f"RSS grew from {warm} KiB to {end} KiB"
    # The server still answers, on the same client and a new one.
    for c in (client, fl.FlightClient(server.flight_uri)):
        info = _statement_info(c, "SELECT 41 + 1 AS answer")
        table = c.do_get(info.endpoints[0].ticket).read_all()
        assert table.column("answer").to_pylist() == [42]
