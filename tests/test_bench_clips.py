"""Pure parts of the clips benchmark (bench/clips.py; the runs themselves are the bench's)."""

from __future__ import annotations

import pytest

from bench.clips import (
    images_served,
    markdown,
    mean_batches,
    parse_size,
    scene_order,
    summarize,
)

pytestmark = pytest.mark.unit


def stats(**models: tuple[int, int]) -> dict:
    """A ``get_inference_statistics`` reply as JSON: ``{name: (images, executions)}``,
    counts as strings the way Triton sends 64-bit numbers."""
    return {
        "model_stats": [
            {"name": name, "version": "1", "inference_count": str(i), "execution_count": str(e)}
            for name, (i, e) in models.items()
        ]
    }


def side(images_per_s: float, client_ms: float = 2.0, server_ms: float | None = None, **extra):
    """One side's measurement: images/s and CPU ms per image (client, server)."""
    return {
        "images_per_s": images_per_s,
        "client_cpu_ms_per_image": client_ms,
        "server_cpu_ms_per_image": server_ms,
        **extra,
    }


def test_size_is_width_by_height_and_nonsense_is_refused():
    assert parse_size("640x480") == (640, 480)
    assert parse_size("1280X720") == (1280, 720)
    for bad in ("640", "640x", "x480", "640x480x3", "-640x480", "sixxfour", "8x8"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_scene_order_holds_each_photo_then_moves_on_round_and_round():
    assert scene_order(7, 2, hold=3) == [0, 0, 0, 1, 1, 1, 0]
    assert scene_order(0, 5) == []
    with pytest.raises(ValueError):
        scene_order(4, 0)


def test_mean_batches_are_images_over_executions_between_two_readings():
    before = stats(tensorflow=(10, 5), detect_tensorflow=(10, 10), idle=(3, 3))
    after = stats(tensorflow=(42, 9), detect_tensorflow=(42, 42), idle=(3, 3), new=(8, 1))
    # 32 images in 4 runs; the ensemble counts one run per request; idle did not run.
    assert mean_batches(before, after) == {"tensorflow": 8.0, "detect_tensorflow": 1.0, "new": 8.0}
    assert images_served(before, after, "detect_tensorflow") == 32
    assert images_served(before, after, "absent") == 0


def test_summary_takes_the_median_of_each_rounds_ratio_and_checks_the_target():
    rounds = [
        {"still": side(10.0), "clip": side(9.5)},  # 95 %
        {"still": side(20.0), "clip": side(16.0)},  # 80 %
        {"still": side(8.0), "clip": side(9.6)},  # 120 %
    ]
    s = summarize(rounds, target=0.9)
    assert s["ratios"] == pytest.approx([0.95, 0.80, 1.2])
    # The median of the paired ratios, not the ratio of the medians (9.6 / 10 = 96 %).
    assert s["ratio"] == pytest.approx(0.95)
    assert (s["ratio_min"], s["ratio_max"]) == pytest.approx((0.80, 1.2))
    assert s["still_images_per_s"] == 10.0 and s["clip_images_per_s"] == 9.6
    assert s["passed"] is True
    assert summarize(rounds[1:2], target=0.9)["passed"] is False
    assert "cpu_ratio" not in s  # no server CPU measured
    with pytest.raises(ValueError):
        summarize([])


def test_cpu_ratio_is_the_still_sides_cpu_per_image_over_the_clips():
    rounds = [
        # A busy machine halves the clip's images/s, not its CPU per image.
        {"still": side(10.0, 10.0, 90.0), "clip": side(5.0, 20.0, 80.0)},  # 100 / 100
        {"still": side(10.0, 10.0, 90.0), "clip": side(9.0, 25.0, 100.0)},  # 100 / 125
        {"still": side(10.0, 10.0, 110.0), "clip": side(9.0, 20.0, 80.0)},  # 120 / 100
    ]
    s = summarize(rounds)
    assert s["cpu_ratios"] == pytest.approx([1.0, 0.8, 1.2])
    assert s["cpu_ratio"] == pytest.approx(1.0)
    assert s["ratio"] == pytest.approx(0.9)


def test_markdown_shows_every_round_and_the_verdict():
    rounds = [
        {"still": side(10.0, 1.0, 99.0, server_batches={"tensorflow": 2.4}),
         "clip": side(8.0, 5.0, 105.0, server_batches={"tensorflow": 8.0})},
        {"still": side(10.0), "clip": side(7.0)},
    ]  # fmt: skip
    result = {
        "ensemble": "detect_tensorflow",
        "detector_model": "tensorflow",
        "size": [640, 480],
        "codec": "mp4v in MP4, 25 fps",
        "clip_bytes": 700_000,
        "concurrency": 8,
        "batch_size": 8,
        "max_in_flight": 2,
        "settings": {"frames": 400},
        "rounds": rounds,
        "summary": summarize(rounds),
    }
    text = markdown(result)
    rows = [line for line in text.splitlines() if line.startswith(("| 1 ", "| 2 "))]
    assert len(rows) == 2
    # 100 ms/img at 10 img/s: one core busy; 110 ms/img at 8 img/s: 0.88.
    assert rows[0] == (
        "| 1 | 10.00 | 8.00 | 80% | 100 | 110 | 1.0 | 5.0 | 1.00 | 0.88 | 2.4 | 8.0 |"
    )
    # No server CPU and no batches measured: dashes, not zeros.
    assert rows[1] == "| 2 | 10.00 | 7.00 | 70% | – | – | 2.0 | 2.0 | – | – | – | – |"
    assert "**FAIL**" in text and "75%" in text


def test_the_bench_check_wants_every_round_measured_and_the_section_in_the_report(tmp_path):
    import json

    from bench.check import CLIPS_SECTION, check_clips

    report = f"# Benchmark\n\n{CLIPS_SECTION} (bench/clips.py)\n"
    assert check_clips(tmp_path, report) == [f"{tmp_path}: missing clips.json (clips against "
                                             "still photos)"]  # fmt: skip
    rounds = [{"still": side(10.0), "clip": side(9.0, frames=64)}]
    result = {"settings": {"frames": 64}, "rounds": rounds, "summary": summarize(rounds)}
    (tmp_path / "clips.json").write_text(json.dumps(result))
    assert check_clips(tmp_path, report) == []
    assert check_clips(tmp_path, "# Benchmark\n") == ["report.md has no clips section"]
    rounds[0]["clip"] = side(0.0, frames=40)  # stopped short, nothing measured
    (tmp_path / "clips.json").write_text(json.dumps(result))
    assert check_clips(tmp_path, report) == [
        "clips round 1 clip: images_per_s is 0.0, not a positive number",
        "clips round 1: 40 of 64 frames",
    ]
