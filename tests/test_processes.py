"""ensemble.processes: the orderly stop that Ctrl-C and SIGTERM ask for."""

from __future__ import annotations

import os
import signal
import time

import pytest

from ensemble.processes import stop_signals

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
