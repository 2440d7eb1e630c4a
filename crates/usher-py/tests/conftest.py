"""Fixtures: a vendor key pair and signed license (made with the `usher` tool), and a
real `usherd` on a loopback port, both from the Cargo target directory (USHER_BIN_DIR,
default target/debug)."""

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
BIN_DIR = Path(os.environ.get("USHER_BIN_DIR", REPO / "target" / "debug"))
WAIT = 20.0  # seconds any wait may last before a test fails: bounds a hang

LICENSE = """\
FEATURE cad acme 2025 permanent 2 HOSTID=ANY
FEATURE sim acme 1.0 31-dec-2099 5 HOSTID=ANY
"""


def run(*args, check=True):
    """Runs a binary of the target directory and returns the completed process."""
    done = subprocess.run(
        [str(BIN_DIR / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=WAIT,
        stdin=subprocess.DEVNULL,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{args} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def poll(what, attempt, timeout=WAIT):
    """Calls attempt() until it returns something other than None; fails after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = attempt()
        if last is not None and last is not False:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No USHER_* setting of the caller's shell leaks in; trust on first use remembers
    the test servers' fresh ids in a file of the test's own."""
    for key in list(os.environ):
        if key.startswith("USHER_") and key != "USHER_BIN_DIR":
            monkeypatch.delenv(key)
    monkeypatch.setenv("USHER_KNOWN_SERVERS", str(tmp_path / "known_servers"))


@pytest.fixture(scope="session")
def vendor(tmp_path_factory):
    """(public key path, signed license path) of the vendor `acme`."""
    d = tmp_path_factory.mktemp("vendor")
    run("usher", "vendor", "keygen", "--vendor", "acme", "--out", str(d / "keys"))
    (d / "cad.lic.unsigned").write_text(LICENSE)
    run(
        "usher", "vendor", "sign", "--key", str(d / "keys" / "acme.key"),
        "--in", str(d / "cad.lic.unsigned"), "--out", str(d / "cad.lic"),
    )
    return d / "keys" / "acme.pub", d / "cad.lic"


class Server:
    """A running usherd; `spec` is the server list a client takes."""

    def __init__(self, vendor, scratch):
        public_key, license_file = vendor
        self.data_dir = scratch / "data"
        self.log = scratch / "usherd.log"
        for _ in range(3):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
            self.process = subprocess.Popen(
                [
                    str(BIN_DIR / "usherd"),
                    "--listen", f"127.0.0.1:{self.port}",
                    "--data-dir", str(self.data_dir),
                    "--license", str(license_file),
                    "--vendor-key", str(public_key),
                    "--heartbeat-interval", "200ms",
                    "--session-ttl", "2s",
                    "--reconnect-grace", "500ms",
                    "--status-detail", "full",
                    "--min-remove", "0s",
                    "--admin-listen", "off",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(self.log, "w"),
            )
            if self._ready():
                return
            self.stop()
        raise AssertionError(f"usherd did not start\n{self.log.read_text()}")

    def _ready(self):
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False  # another process took the port first
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    @property
    def spec(self):
        return f"{self.port}@127.0.0.1"

    def status(self):
        """`usher status --json`, parsed."""
        return json.loads(run("usher", "status", "--json", "-c", self.spec).stdout)

    def feature(self, name):
        return next(f for f in self.status()["features"] if f["feature"] == name)

    def wait_in_use(self, name, n):
        poll(f"{n} seat(s) of {name} in use", lambda: self.feature(name)["in_use"] == n)

    def remove(self, handle):
        """`usher remove HANDLE`, as an administrator."""
        run("usher", "remove", handle, "--data-dir", str(self.data_dir))

    def stop(self):
        self.process.kill()
        self.process.wait()


@pytest.fixture
def server(vendor, tmp_path):
    s = Server(vendor, tmp_path)
    yield s
    s.stop()
