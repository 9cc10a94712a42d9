"""Pure parts of the size sweep (bench.sweep) and its photos (bench.photos); the sweep
itself runs against a server (`python -m bench.sweep`)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bench.photos import NOISE_SIGMA, scaled_size, sized_photo
from bench.sweep import (
    MODES,
    Mode,
    markdown,
    request_inputs,
    server_ms,
    step_breakdown,
    write_outputs,
)
from ensemble import contract

pytestmark = pytest.mark.unit


# --- the photos ----------------------------------------------------------------------


def test_scaled_size_keeps_the_aspect_ratio_at_the_megapixels_asked():
    assert scaled_size(512, 512, 1.0) == (1000, 1000)
    assert scaled_size(600, 400, 24.0) == (6000, 4000)
    # sqrt(0.3e6 * 1.5) = 670.8 -> 671 wide, 671 / 1.5 = 447.3 -> 447 high
    assert scaled_size(600, 400, 0.3) == (671, 447)


@pytest.mark.parametrize("megapixels", [0.3, 1, 3, 12, 24])
@pytest.mark.parametrize("source", [(512, 512), (600, 400), (400, 328), (451, 300)])
def test_every_sweep_size_is_within_half_a_percent_of_its_target(source, megapixels):
    width, height = scaled_size(*source, megapixels)
    assert abs(width * height / (megapixels * 1e6) - 1) < 0.005
    assert abs((width / height) / (source[0] / source[1]) - 1) < 0.005


def _size_and_pixels(jpeg: bytes) -> tuple[tuple[int, int], np.ndarray]:
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.format == "JPEG"
        return image.size, np.asarray(image.convert("RGB"), dtype=np.float32)


def test_a_sized_photo_is_a_jpeg_of_the_size_asked_and_the_same_bytes_every_time():
    first = sized_photo("coffee", 0.3, cache=None)  # coffee.png is 600x400
    assert sized_photo("coffee", 0.3, cache=None) == first
    size, _ = _size_and_pixels(first)
    assert size == (671, 447)


def test_a_sized_photo_carries_grain_of_about_the_sigma_asked():
    clean = _size_and_pixels(sized_photo("coffee", 0.3, sigma=0, cache=None))[1]
    grainy = _size_and_pixels(sized_photo("coffee", 0.3, cache=None))[1]
    noise = (grainy - clean).mean(axis=2)  # grain is the same on R, G and B
    # JPEG smooths some of the grain away and adds its own error: within a third
    assert NOISE_SIGMA * 0.67 < noise.std() < NOISE_SIGMA * 1.33
    assert sized_photo("coffee", 0.3, seed=1, cache=None) != sized_photo(
        "coffee", 0.3, seed=2, cache=None
    )


def test_a_sized_photo_is_read_back_from_the_cache_under_what_it_is_made_from(tmp_path):
    made = sized_photo("chelsea", 0.05, cache=tmp_path)
    (path,) = tmp_path.iterdir()
    assert path.read_bytes() == made and path.name.startswith("chelsea-")
    path.write_bytes(b"kept")  # what is read back is the file, not a new photo
    assert sized_photo("chelsea", 0.05, cache=tmp_path) == b"kept"
    other = sized_photo("chelsea", 0.05, sigma=1.0, cache=tmp_path)
    assert other != b"kept" and len(list(tmp_path.iterdir())) == 2


# --- the requests ------------------------------------------------------------------


def test_display_mode_sends_the_annotated_side_as_int32_and_full_mode_sends_none():
    full, display = MODES
    assert [i.name() for i in request_inputs(b"\xff\xd8photo", full)] == [contract.IMAGE]
    inputs = request_inputs(b"\xff\xd8photo", Mode("display", 1280))
    assert [i.name() for i in inputs] == [contract.IMAGE, contract.ANNOTATED_MAX_SIDE]
    side = inputs[1]
    assert side.datatype() == "INT32" and side.shape() == [1, 1]
    assert np.frombuffer(side._get_content(), dtype="<i4").tolist() == [1280]
    assert display.annotated_max_side == 1280


# --- Triton's statistics -------------------------------------------------------------


def _stats(name: str, version: str = "1", **phases: tuple[int, int]) -> dict:
    """One model's entry of get_inference_statistics(as_json=True): 64-bit numbers as
    strings, a duration that never counted as {}."""
    inference = {
        phase: ({"count": str(c), "ns": str(ns)} if c else {}) for phase, (c, ns) in phases.items()
    }
    return {"name": name, "version": version, "inference_stats": inference}


MS = 1_000_000  # ns


def _before_after() -> tuple[dict, dict]:
    before = {"model_stats": [
        _stats("decode", success=(10, 60 * MS), queue=(10, 1 * MS), compute_input=(10, 2 * MS),
               compute_infer=(10, 30 * MS), compute_output=(10, 3 * MS)),
        _stats("nanodet", "1", success=(6, 0), queue=(6, 6 * MS), compute_infer=(6, 420 * MS)),
        _stats("nanodet", "2", success=(4, 0), queue=(4, 4 * MS), compute_infer=(4, 280 * MS)),
        _stats("idle_step"),
        _stats("detect_x", success=(10, 900 * MS)),
    ]}  # fmt: skip
    after = {"model_stats": [
        _stats("decode", success=(14, 90 * MS), queue=(14, 3 * MS), compute_input=(14, 6 * MS),
               compute_infer=(14, 70 * MS), compute_output=(14, 11 * MS)),
        _stats("nanodet", "1", success=(8, 0), queue=(8, 7 * MS), compute_infer=(8, 560 * MS)),
        _stats("nanodet", "2", success=(6, 0), queue=(6, 7 * MS), compute_infer=(6, 420 * MS)),
        _stats("idle_step"),
        _stats("detect_x", success=(14, 1300 * MS)),
    ]}  # fmt: skip
    return before, after


def test_step_breakdown_is_the_difference_of_the_statistics_per_run_and_per_request():
    before, after = _before_after()
    steps = step_breakdown(before, after, ["decode", "nanodet", "idle_step", "absent"], 4)
    # decode: 4 runs; queue 2 ms, input 4 ms, infer 40 ms, output 8 ms in all
    assert steps["decode"]["runs"] == 4
    assert steps["decode"]["queue_ms"] == pytest.approx(0.5)
    assert steps["decode"]["compute_input_ms"] == pytest.approx(1.0)
    assert steps["decode"]["compute_infer_ms"] == pytest.approx(10.0)
    assert steps["decode"]["compute_output_ms"] == pytest.approx(2.0)
    assert steps["decode"]["per_request_ms"] == pytest.approx(54 / 4)
    # nanodet's two versions together: 4 runs, queue 1 + 3 ms, infer 140 + 140 ms
    assert steps["nanodet"]["runs"] == 4
    assert steps["nanodet"]["queue_ms"] == pytest.approx(1.0)
    assert steps["nanodet"]["compute_infer_ms"] == pytest.approx(70.0)
    assert steps["nanodet"]["compute_input_ms"] == 0
    assert steps["nanodet"]["per_request_ms"] == pytest.approx(284 / 4)
    # a step that did not run, or that the server does not have, is left out
    assert list(steps) == ["decode", "nanodet"]


def test_server_time_is_the_ensembles_success_duration_per_request_in_between():
    before, after = _before_after()
    assert server_ms(before, after, "detect_x") == pytest.approx(400 / 4)
    assert server_ms(before, after, "idle_step") is None
    assert server_ms(before, after, "absent") is None


# --- the report ----------------------------------------------------------------------


def _row(mp, mode, mean, p50, ips, p99, back, steps=None, size=(671, 447), error=None):
    """A measured row as run_sweep records it; ``steps``: {step: (per_request_ms, queue_ms)}."""
    if error is not None:
        return {"ensemble": "detect_x", "target_mp": mp, "mode": mode, "error": error,
                "annotated_max_side": 1280 if mode == "display" else None}  # fmt: skip
    return {
        "ensemble": "detect_x", "target_mp": mp, "mode": mode, "error": None,
        "annotated_max_side": 1280 if mode == "display" else None,
        "c1": {"n": 3, "mean_ms": mean, "p50_ms": p50, "p99_ms": p50},
        "server_ms": mean - 1.5,
        "steps": {s: {"runs": 3, "queue_ms": q, "compute_input_ms": 0.0, "compute_infer_ms": t - q,
                      "compute_output_ms": 0.0, "per_request_ms": t}
                  for s, (t, q) in (steps or {}).items()},
        "annotated": {"bytes_mean": back, "size": list(size)},
        "num_detections": 2,
        "c8": {"concurrency": 8, "duration_s": 3.1, "images_per_s": ips, "n": 30,
               "mean_ms": 700.0, "p50_ms": 690.0, "p99_ms": p99, "answered": 30, "refused": 0,
               "failed": 0, "failures": {}},
    }  # fmt: skip


def _result(rows) -> dict:
    return {
        "meta": {
            "url": "127.0.0.1:8001", "date": "2026-11-29 12:00:00",
            "machine": "Test CPU, 2 CPUs", "quick": True, "ensembles": ["detect_x"],
            "served": {"detect_x": {"title": "X-det 416", "detectors": [], "steps": []}},
            "sizes_mp": [0.3, 12.0],
            "modes": [{"name": "full", "annotated_max_side": None},
                      {"name": "display", "annotated_max_side": 1280}],
            "settings": {"requests": 3, "warmup": 1, "concurrency": 8, "load_s": 3.0},
            "photos": {"names": ["coffee", "horse"], "noise_sigma": 3.0, "noise_seed": 10,
                       "jpeg_quality": 90},
        },
        "photos": [
            {"target_mp": 0.3, "sizes": [[671, 447], [605, 496]], "megapixels": 0.3, "bytes": [],
             "bytes_mean": 61_000.0, "bytes_per_pixel": 0.2},
            {"target_mp": 12.0, "sizes": [], "megapixels": 12.004, "bytes": [],
             "bytes_mean": 2_000_000.0, "bytes_per_pixel": 0.1666},
        ],
        "rows": rows,
    }  # fmt: skip


SMALL = {"decode": (3.0, 0.1), "x": (70.0, 0.5), "draw": (5.0, 0.0)}
LARGE_FULL = {"decode": (400.0, 2.0), "x": (71.0, 1.0), "draw": (300.0, 0.0)}
LARGE_DISPLAY = {"decode": (100.0, 1.0), "x": (72.0, 1.0), "draw": (20.0, 0.0)}


def _four_rows() -> list[dict]:
    return [
        _row(0.3, "full", 90.4, 88.0, 10.5, 1200.0, 70_000.0, SMALL),
        _row(0.3, "display", 85.0, 84.2, 11.0, 1100.0, 69_000.0, SMALL),
        _row(12.0, "full", 900.0, 880.0, 2.5, 4000.0, 3_000_000.0, LARGE_FULL, (4243, 2829)),
        _row(12.0, "display", 300.0, 290.0, 6.0, 1500.0, 150_000.0, LARGE_DISPLAY, (1280, 853)),
    ]


def test_markdown_has_a_row_per_size_with_both_modes_side_by_side():
    text = markdown(_result(_four_rows()))
    assert "## Photo size sweep" in text
    assert "### detect_x (X-det 416)" in text
    assert "| 0.3 | 0.30 MP | 61 | 0.20 |" in text
    assert "| 12 | 12.00 MP | 2000 | 0.17 |" in text
    assert (
        "| MP | full: c=1 mean / p50 ms | full: c=8 images/s (p99 ms) | full: kB back "
        "| display: c=1 mean / p50 ms | display: c=8 images/s (p99 ms) | display: kB back |"
    ) in text
    assert "| 0.3 | 90 / 88 | 10.50 (1200) | 70 | 85 / 84 | 11.00 (1100) | 69 |" in text
    assert "| 12 | 900 / 880 | 2.50 (4000) | 3000 | 300 / 290 | 6.00 (1500) | 150 |" in text
    assert "Notes:" not in text


def test_markdown_breaks_down_the_largest_size_and_names_what_grows_with_the_pixels():
    text = markdown(_result(_four_rows()))
    assert "Where the time goes at 12 MP, c=1" in text
    assert "| step | full | display |" in text
    assert "| decode | 400.0 (2.0) | 100.0 (1.0) |" in text
    assert "| x | 71.0 (1.0) | 72.0 (1.0) |" in text
    assert "| draw | 300.0 (0.0) | 20.0 (0.0) |" in text
    assert "| server, whole request | 898.5 | 298.5 |" in text
    assert "| client, request to reply | 900.0 | 300.0 |" in text
    assert (
        "What grows with the pixels (full, 0.3 → 12 MP, per request): decode 3.0 → 400.0 ms, "
        "draw 5.0 → 300.0 ms, x 70.0 → 71.0 ms, whole request 90 → 900 ms."
    ) in text


def test_markdown_shows_a_refused_mode_as_dashes_and_says_why():
    rows = _four_rows()
    refusal = "unexpected inference input 'ANNOTATED_MAX_SIDE' for model 'detect_x'"
    rows[3] = _row(12.0, "display", 0, 0, 0, 0, 0, error=refusal)
    text = markdown(_result(rows))
    assert "| 12 | 900 / 880 | 2.50 (4000) | 3000 | – | – | – |" in text
    assert "| decode | 400.0 (2.0) | – |" in text
    assert f"- detect_x, 12 MP, display: {refusal}" in text


def test_markdown_says_when_the_server_ignored_the_annotated_side():
    rows = _four_rows()
    rows[3]["annotated"]["size"] = [4243, 2829]
    text = markdown(_result(rows))
    assert (
        "- detect_x, 12 MP, display: the annotated image came back 4243x2829, larger than "
        "the 1280 asked for: the server ignores ANNOTATED_MAX_SIDE"
    ) in text


def test_outputs_are_written_and_the_csv_has_each_steps_time_per_request(tmp_path):
    paths = write_outputs(_result(_four_rows()), tmp_path)
    assert [p.name for p in paths] == ["sweep.json", "sweep.csv", "sweep.png", "sweep.md"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (tmp_path / "sweep.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:4] == ["ensemble", "mode", "annotated_max_side", "target_mp"]
    assert header[-3:] == ["step decode ms", "step x ms", "step draw ms"]
    assert len(lines) == 5
    row = dict(zip(header, lines[3].split(","), strict=True))  # 12 MP, full
    assert row["c1_mean_ms"] == "900.0" and row["step draw ms"] == "300.0"


def test_markdown_says_when_the_modes_found_a_different_number_of_objects():
    rows = _four_rows()
    assert "detections in the first photo" not in markdown(_result(rows))
    rows[3]["num_detections"] = 1
    text = markdown(_result(rows))
    assert "- detect_x, 12 MP: detections in the first photo: full 2, display 1" in text
    assert "- detect_x, 0.3 MP" not in text
