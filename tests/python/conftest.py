"""Fixtures: start the real prognos binary on free ports for the Python client tests."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def prognos_bin() -> str:
    if os.environ.get("PROGNOS_BIN"):
        return os.environ["PROGNOS_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(Path(target) / "debug" / "prognos")


class Server:
    def __init__(self, demo=False, env=None):
        self.tmp = tempfile.mkdtemp(prefix="prognos-py-")
        self.data_dir = os.path.join(self.tmp, "data")
        self.demo = demo
        self.env = dict(os.environ, PROGNOS_LOG=os.environ.get("PROGNOS_LOG", "warn"), **(env or {}))
        self.proc = None
        self.start()

    def start(self):
        args = [prognos_bin(), "serve", "--data-dir", self.data_dir,
                "--pg-listen", "127.0.0.1:0", "--flight-listen", "127.0.0.1:0",
                "--http-listen", "127.0.0.1:0"]
        if not self.demo:
            args.append("--no-demo")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, env=self.env, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("prognos ready"):
            raise RuntimeError(f"server did not start: {line!r}")
        addrs = dict(p.split("=", 1) for p in line.split()[2:])
        self.pg_host, self.pg_port = addrs["pg"].rsplit(":", 1)
        self.flight = addrs["flight"]
        self.http = addrs["http"]
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    @property
    def dsn(self):
        return f"host={self.pg_host} port={self.pg_port} user=prognos dbname=prognos"

    @property
    def flight_uri(self):
        return f"grpc://{self.flight}"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self):
        return self.proc.poll() is None

    def close(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    s = Server(demo=True)
    yield s
    s.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto():
    """A local S3-compatible server (moto)."""
    exe = shutil.which("moto_server")
    if exe is None:
        pytest.fail("moto_server is not installed (pip install 'moto[server]')")
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    import urllib.request
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/", timeout=1)
            break
        except Exception:
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)
