"""Pure parts of the benchmark tooling (the runs themselves are `make bench`'s)."""

from __future__ import annotations

import base64
import json
import struct

from bench.perf_analyzer import serialize_bytes_tensor, write_input_data


def test_bytes_tensor_is_serialised_as_little_endian_length_then_bytes():
    data = serialize_bytes_tensor([b"ab", b"", b"\x00xyz"])
    assert (
        data
        == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0) + struct.pack("<I", 4) + b"\x00xyz"
    )


def test_input_data_holds_one_request_per_photo_with_the_files_bytes(tmp_path):
    photos = [b"\x89PNG first", b"\xff\xd8 second"]
    path = write_input_data(tmp_path / "input.json", photos)
    entries = json.loads(path.read_text())["data"]
    assert len(entries) == 2
    for entry, photo in zip(entries, photos, strict=True):
        assert entry["IMAGE"]["shape"] == [1]
        raw = base64.b64decode(entry["IMAGE"]["b64"])
        assert struct.unpack("<I", raw[:4])[0] == len(photo) and raw[4:] == photo
