"""ensemble.processes: free ports, stopping a process, and the orderly stop that Ctrl-C
and SIGTERM ask for."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ensemble.processes import EPHEMERAL_PORTS_FILE, free_port, stop_process, stop_signals

pytestmark = pytest.mark.unit


def test_first_signal_asks_to_stop_and_a_second_one_interrupts():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with stop_signals() as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5), "the first signal sets the stop event"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises here, in the main thread
    assert {s: signal.getsignal(s) for s in before} == before, "handlers are restored"


def test_free_ports_are_distinct_and_below_the_range_outgoing_connections_take():
    # A port from the kernel's ephemeral range can be taken by any outgoing connection
    # between the check and the replica's bind (its metrics port binds a minute later).
    low = int(EPHEMERAL_PORTS_FILE.read_text().split()[0])
    ports = [free_port() for _ in range(40)]
    assert len(set(ports)) == len(ports)
    assert all(port < low for port in ports), (low, ports)
    for port in ports:  # and each is free to listen on
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_stop_process_terminates_and_kills_one_that_ignores_sigterm():
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert stop_process(polite, 30) == -signal.SIGTERM
    stubborn = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert stubborn.stdout.readline() == b"ready\n"  # its handler is in place
    assert stop_process(stubborn, 0.5) == -signal.SIGKILL
    assert stop_process(stubborn) == -signal.SIGKILL  # already gone: its code again
