"""The extended query protocol at the message level (a raw socket, no driver).

Replies to Parse / Bind / Describe / Execute are buffered until Sync, like PostgreSQL does;
these tests check that a client using Flush instead of Sync still gets every reply, and that
a whole prepared round trip arrives in one piece."""

import socket
import struct

import pytest


def msg(kind, body=b""):
    return kind + struct.pack("!i", len(body) + 4) + body


def cstr(s):
    return s.encode() + b"\0"


class Conn:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.buf = b""
        params = cstr("user") + cstr("prognos") + cstr("database") + cstr("prognos") + b"\0"
        body = struct.pack("!i", 196608) + params
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
        self.until(b"Z")

    def read(self):
        while len(self.buf) < 5 or len(self.buf) < 1 + struct.unpack("!i", self.buf[1:5])[0]:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        n = 1 + struct.unpack("!i", self.buf[1:5])[0]
        m, self.buf = self.buf[:n], self.buf[n:]
        return m[:1], m[5:]

    def until(self, kind):
        got = []
        while True:
            k, body = self.read()
            got.append((k, body))
            if k == kind:
                return got

    def send(self, *messages):
        self.sock.sendall(b"".join(messages))


def parse(name, sql):
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack("!h", 0))


def bind(stmt, *params):
    body = cstr("") + cstr(stmt) + struct.pack("!h", 0) + struct.pack("!h", len(params))
    for p in params:
        body += struct.pack("!i", len(p)) + p
    return msg(b"B", body + struct.pack("!h", 0))


def describe(kind, name):
    return msg(b"D", kind + cstr(name))


def execute():
    return msg(b"E", cstr("") + struct.pack("!i", 0))


FLUSH = msg(b"H")
SYNC = msg(b"S")


def test_flush_without_sync_gets_every_reply(server):
    c = Conn(server.pg_host, server.pg_port)
    c.send(parse("s1", "SELECT $1::bigint * 2 AS doubled"), describe(b"S", "s1"), FLUSH)
    kinds = [k for k, _ in c.until(b"T")]
    assert kinds == [b"1", b"t", b"T"], kinds
    c.send(bind("s1", b"21"), execute(), FLUSH)
    got = c.until(b"C")
    assert [k for k, _ in got] == [b"2", b"D", b"C"], got
    row = got[1][1]
    assert row[6:] == b"42", row
    c.send(SYNC)
    assert c.until(b"Z")[-1][1] == b"I"


def test_prepared_round_trip_arrives_in_one_segment(server):
    c = Conn(server.pg_host, server.pg_port)
    c.send(parse("s2", "SELECT 1 AS one"), SYNC)
    c.until(b"Z")
    assert c.buf == b""
    c.send(bind("s2"), describe(b"P", ""), execute(), SYNC)
    # Everything up to ReadyForQuery comes in the first read.
    first = c.sock.recv(65536)
    kinds = []
    rest = first
    while rest:
        kinds.append(rest[:1])
        rest = rest[1 + struct.unpack("!i", rest[1:5])[0]:]
    assert kinds == [b"2", b"T", b"D", b"C", b"Z"], kinds


def test_error_inside_a_pipeline_then_sync(server):
    c = Conn(server.pg_host, server.pg_port)
    c.send(parse("bad", "SELECT * FROM no_such_table"), bind("bad"), execute(), SYNC)
    got = c.until(b"Z")
    kinds = [k for k, _ in got]
    assert kinds[0] == b"E" and kinds[-1] == b"Z", kinds
    assert b"C42P01" in got[0][1], got[0][1]
    # The connection keeps working.
    c.send(parse("ok", "SELECT 7"), bind("ok"), execute(), SYNC)
    assert [k for k, _ in c.until(b"Z")] == [b"1", b"2", b"D", b"C", b"Z"]
