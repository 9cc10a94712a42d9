"""The CPU-thread policy of the detector instances and the cross-process busy flags."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from ensemble.cpu_share import SiblingInstances, intra_op_threads

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("threads", "batch", "others", "expected"),
    [
        (2, 1, 0, 2),  # a lone request takes every core
        (2, 4, 0, 1),  # requests queued into a batch: the machine is busy
        (2, 1, 1, 1),  # the sibling instance runs too: half each
        (4, 1, 1, 2),
        (4, 1, 3, 1),
        (8, 2, 0, 4),
        (1, 1, 0, 1),  # never below one
        (1, 8, 5, 1),
    ],
)
def test_threads_are_all_alone_and_a_share_under_load(threads, batch, others, expected):
    assert intra_op_threads(threads, batch, others) == expected


def _hold_lock(folder, instance: str) -> subprocess.Popen:
    """Another process that marks ``instance`` running until it is killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from ensemble.cpu_share import SiblingInstances
        with SiblingInstances({str(folder)!r}, {instance!r}).running():
            print("running", flush=True)
            time.sleep(60)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "running"
    return process


def test_a_sibling_process_counts_while_it_runs_and_not_after_it_dies(tmp_path):
    me = SiblingInstances(tmp_path, "det_0_0")
    assert me.others_running() == 0
    other = _hold_lock(tmp_path, "det_0_1")
    try:
        assert me.others_running() == 1
        with me.running() as others:
            assert others == 1, "the sibling is running"
    finally:
        other.kill()
        other.wait()
    deadline = time.monotonic() + 5
    while me.others_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert me.others_running() == 0, "the kernel releases a dead instance's lock"


def test_an_instance_does_not_count_itself(tmp_path):
    me = SiblingInstances(tmp_path, "det_0_0")
    with me.running() as others:
        assert others == 0
        assert SiblingInstances(tmp_path, "det_0_1").others_running() == 1


def test_siblings_of_one_model_share_a_folder_and_other_models_do_not(tmp_path):
    a = SiblingInstances.of_model(str(tmp_path), "pytorch", "pytorch_0_0")
    b = SiblingInstances.of_model(str(tmp_path), "pytorch", "pytorch_0_1")
    c = SiblingInstances.of_model(str(tmp_path), "tensorflow", "tensorflow_0_0")
    other_repository = SiblingInstances.of_model(str(tmp_path / "r2"), "pytorch", "pytorch_0_0")
    try:
        assert a.folder == b.folder != c.folder
        assert other_repository.folder != a.folder, "another repository's model is another"
    finally:
        for s in (a, b, c, other_repository):
            s.close()
            shutil.rmtree(s.folder, ignore_errors=True)
