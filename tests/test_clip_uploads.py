"""The pure parts of the clip-upload soak (``bench.clip_uploads``): growth from the tenth
upload, the rows it prints, counting temporary files. Fifty real uploads through the
page are in test_clip_uploads_server.py."""

from __future__ import annotations

import pytest

from bench.clip_uploads import Reading, files_under, growth, shown
from bench.processes import MIB

pytestmark = pytest.mark.unit


def reading(n: int, ui_mib: float, files: int, size: int = 0) -> Reading:
    return Reading(n, True, int(ui_mib * MIB), 0, files, size, float(n))


def test_growth_counts_from_the_tenth_upload_to_the_last():
    readings = [reading(n, 100 + n, 3 if n < 10 else 5, 1000) for n in range(1, 51)]
    g = growth(readings)
    assert g["from_upload"] == 10 and g["to_upload"] == 50
    assert g["ui_pss_mib"] == 40.0
    assert g["files"] == 0 and g["file_bytes"] == 0
    assert growth(readings[:4])["from_upload"] == 1  # fewer than ten: from the first
    assert growth([]) == {}


def test_the_table_shows_the_first_every_tenth_and_the_last_upload():
    readings = [reading(n, 100, 1) for n in range(1, 24)]
    assert [r.upload for r in shown(readings)] == [1, 10, 20, 23]


def test_files_under_counts_nested_files_and_their_bytes(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.bin").write_bytes(b"12345")
    (tmp_path / "y.bin").write_bytes(b"12")
    assert files_under(tmp_path) == (2, 7)
    assert files_under(tmp_path / "missing") == (0, 0)
