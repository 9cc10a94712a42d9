"""The web demo over many clip uploads (``bench.clip_uploads``): its temporary files stay
flat. The page runs as users get it (``python -m ui``, its own process) on the test
server; its memory is printed, not asserted (the benchmark's figures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.clip_uploads import MIB, Reading, files_under, format_report, growth, run, shown
from ensemble import contract

UPLOADS = 50


def reading(n: int, ui_mib: float, files: int, size: int = 0) -> Reading:
    return Reading(n, True, int(ui_mib * MIB), 0, files, size, float(n))


@pytest.mark.unit
def test_growth_counts_from_the_tenth_upload_to_the_last():
    readings = [reading(n, 100 + n, 3 if n < 10 else 5, 1000) for n in range(1, 51)]
    g = growth(readings)
    assert g["from_upload"] == 10 and g["to_upload"] == 50
    assert g["ui_pss_mib"] == 40.0
    assert g["files"] == 0 and g["file_bytes"] == 0
    assert growth(readings[:4])["from_upload"] == 1  # fewer than ten: from the first
    assert growth([]) == {}


@pytest.mark.unit
def test_the_table_shows_the_first_every_tenth_and_the_last_upload():
    readings = [reading(n, 100, 1) for n in range(1, 24)]
    assert [r.upload for r in shown(readings)] == [1, 10, 20, 23]


@pytest.mark.unit
def test_files_under_counts_nested_files_and_their_bytes(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.bin").write_bytes(b"12345")
    (tmp_path / "y.bin").write_bytes(b"12")
    assert files_under(tmp_path) == (2, 7)
    assert files_under(tmp_path / "missing") == (0, 0)


@pytest.mark.server
@pytest.mark.slow
def test_fifty_clip_uploads_leave_no_more_temporary_files_than_ten(triton_url, tmp_path):
    result = run(triton_url, Path(tmp_path), UPLOADS, contract.DETECT_ALL, clip_frames=3)
    print(format_report(result))
    assert result["answered"] == UPLOADS
    readings = [Reading(**r) for r in result["readings"]]
    assert len(readings) == UPLOADS
    # After each upload: what the page had before (its example photos) and the
    # session's one result, the annotated clip and its JSON; the uploaded clip itself
    # is gone, and nothing else accumulates.
    assert [r.files for r in readings] == [result["files_before"] + 2] * UPLOADS
    assert result["growth"]["files"] == 0
    assert result["files_after_page_stopped"] == 0  # the page removes its folder at exit
