"""The chart's `helm test` script (files/test-inference.py) run as its pod runs it,
against the session's real server in place of the Service."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cluster import chart

pytestmark = pytest.mark.server


def test_helm_test_script_passes_one_real_inference(triton_url):
    env = {**os.environ, "TRITON_URL": triton_url, "TEST_READY_TIMEOUT_S": "60"}
    env.pop("DETECTOR_API_KEY", None)  # the pod has none: inference needs no key
    done = subprocess.run(
        [sys.executable, "-c", chart.HELM_TEST_SCRIPT.read_text()],
        env=env, cwd=chart.REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{triton_url}: detect_all answered in" in done.stdout
