"""The usher package against a real usherd."""

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
import usher

from conftest import REPO, WAIT, poll


def test_grant_then_checkin_frees_the_seat(server):
    with usher.Client(server.spec) as client:
        lic = client.checkout("cad", "2025")
        assert (lic.feature, lic.version, lic.vendor, lic.count) == ("cad", "2025", "acme", 1)
        assert lic.status == "granted" and not lic.lost and lic.lost_reason is None
        assert lic.expires is None and not lic.overdraft and lic.statement is None
        lic.check()
        holders = server.feature("cad")["holders"]
        assert [h["handle"] for h in holders] == [str(lic.lease_id)]
        status = {f["feature"]: f for f in client.status()}
        assert status["cad"]["in_use"] == 1 and status["cad"]["total"] == 2
        lic.checkin()
        assert lic.status == "checked_in"
        assert server.feature("cad")["in_use"] == 0
        lic.checkin()  # idempotent
        with pytest.raises(usher.ClientClosed):
            lic.check()


def test_module_checkout_owns_its_session(server):
    with usher.checkout("sim", count=3, servers=server.spec) as lic:
        assert lic.count == 3
        server.wait_in_use("sim", 3)
    assert lic.status == "checked_in"
    assert server.feature("sim")["in_use"] == 0


def test_denials_raise_the_right_exception_with_the_c_code(server):
    with usher.Client(server.spec) as client:
        with pytest.raises(usher.NoSuchFeature) as e:
            client.checkout("nosuchfeature")
        assert e.value.code == -20 and not e.value.retryable
        assert isinstance(e.value, usher.LicenseUnavailable)
        assert isinstance(e.value, usher.UsherError)
        with pytest.raises(usher.NoSuchFeature):
            client.checkout("cad", "2030")
        held = client.checkout("cad", count=2)
        with pytest.raises(usher.AllInUse) as e:
            client.checkout("cad")
        assert e.value.code == -24 and e.value.retryable
        assert "2 seats" in e.value.detail and "2 seats" in str(e.value)
        with pytest.raises(usher.WaitTimedOut) as e:
            client.checkout("cad", wait=0.5)
        assert e.value.code == -26
        with pytest.raises(usher.LicenseUnavailable) as e:
            client.checkout("cad", count=3)
        assert e.value.code == -38
        with pytest.raises(usher.InvalidArgument):
            client.checkout("cad", wait=-1)
        held.checkin()


def test_unreachable_server_raises_server_unreachable():
    with socket_port() as port:
        with pytest.raises(usher.ServerUnreachable) as e:
            usher.Client(f"{port}@127.0.0.1", connect_timeout=1.0)
    assert e.value.code == -10 and e.value.retryable
    with pytest.raises(usher.InvalidArgument) as e:
        usher.Client("not a server list@@")
    assert e.value.code == -3


def socket_port():
    """A context manager holding a loopback port nobody listens on."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]

    class Held:
        def __enter__(self):
            return port

        def __exit__(self, *exc):
            s.close()

    return Held()


def test_a_queued_checkout_is_granted_when_a_holder_leaves(server):
    with usher.Client(server.spec) as holder, usher.Client(server.spec) as waiter:
        held = holder.checkout("cad", count=2)
        result = {}

        def wait_for_seat():
            result["license"] = waiter.checkout("cad", wait=WAIT)

        t = threading.Thread(target=wait_for_seat)
        t.start()
        poll("the checkout to queue", lambda: len(server.status()["queue"]) == 1)
        held.checkin()
        t.join(WAIT)
        assert not t.is_alive()
        assert result["license"].status == "granted"
        server.wait_in_use("cad", 1)
        assert server.status()["queue"] == []


def test_a_license_removed_by_an_administrator_is_lost(server):
    with usher.Client(server.spec) as client:
        lic = client.checkout("cad")
        assert lic.wait_lost(timeout=0.2) is None
        server.remove(server.feature("cad")["holders"][0]["handle"])
        reason = lic.wait_lost(timeout=WAIT)
        assert reason and "administrator" in reason
        assert lic.lost and lic.status == "lost" and lic.lost_reason == reason
        with pytest.raises(usher.LicenseLost) as e:
            lic.check()
        assert e.value.code == -35
        lic.checkin()


def test_the_gil_is_released_while_a_checkout_waits(server):
    with usher.Client(server.spec) as client:
        held = client.checkout("cad", count=2)
        ticks = []

        def other_thread():
            # 100 switches back into Python: with the GIL held by the waiting checkout
            # (retaken only between its 100 ms slices) this would take 10 s or more.
            for _ in range(100):
                ticks.append(time.monotonic())
                time.sleep(0.005)

        t = threading.Thread(target=other_thread)
        started = time.monotonic()
        t.start()
        with pytest.raises(usher.WaitTimedOut):
            client.checkout("cad", wait=5)
        returned = time.monotonic()
        t.join(WAIT)
        assert len(ticks) == 100
        assert ticks[-1] < returned, (
            f"the other thread finished {ticks[-1] - started:.2f} s after the start, "
            f"the checkout returned after {returned - started:.2f} s"
        )
        held.checkin()


def test_ctrl_c_interrupts_a_waiting_checkout_and_withdraws_it(server):
    # Python's own Ctrl-C handler, even when this process started with SIGINT ignored
    # (as a job started in the background by a non-interactive shell does).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        ctrl_c_interrupts_a_waiting_checkout(server)
    finally:
        signal.signal(signal.SIGINT, previous)


def ctrl_c_interrupts_a_waiting_checkout(server):
    with usher.Client(server.spec) as client:
        held = client.checkout("cad", count=2)

        failed = []

        def queued():
            # A status read that fails (a loaded machine) is one more try, not the end of
            # this thread: the interrupt must come whatever happens here.
            try:
                return len(server.status()["queue"]) == 1
            except Exception:
                return False

        def interrupt_once_queued():
            try:
                poll("the checkout to queue", queued)
            except BaseException as e:
                failed.append(e)
            finally:
                os.kill(os.getpid(), signal.SIGINT)

        t = threading.Thread(target=interrupt_once_queued)
        t.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            # Long enough that only the interrupt can end it within the test's bounds
            # (were Ctrl-C ignored, this would fail with WaitTimedOut, not hang).
            client.checkout("cad", wait=3 * WAIT)
        assert time.monotonic() - started < 2 * WAIT
        t.join(WAIT)
        assert not failed, f"the checkout was never seen queued: {failed}"
        # The interrupted request leaves the queue; the client still works.
        poll("the queue to empty", lambda: server.status()["queue"] == [])
        assert client.status("cad")[0]["in_use"] == 2
        held.checkin()


def test_a_grant_verified_with_the_vendor_key_carries_its_signed_statement(server, vendor):
    public_key, _ = vendor
    with usher.Client(server.spec, vendor_keys=[public_key]) as client:
        with client.checkout("cad") as lic:
            assert lic.statement and "signature" in lic.statement
    with pytest.raises(usher.InvalidArgument) as e:
        usher.Client(server.spec, vendor_keys=["/nonexistent/acme.pub"])
    assert e.value.code == -4


def readme_python_example():
    """The README's Python example: its first ```python block."""
    text = (REPO / "README.md").read_text()
    found = re.search(r"```python\n(.*?)```", text, re.S)
    assert found, "README.md has a Python example"
    return found.group(1)


def test_the_readme_python_example_runs_as_shown(server, monkeypatch, capsys):
    monkeypatch.setenv("USHER_LICENSE", server.spec)
    exec(compile(readme_python_example(), "README.md", "exec"), {})
    assert server.feature("cad")["in_use"] == 0
    assert "cad" in capsys.readouterr().out
