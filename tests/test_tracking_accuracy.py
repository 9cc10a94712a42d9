"""Tracking accuracy against the real server (bench.tracking): the synthetic clips
through a detection ensemble and ensemble.tracking.Tracker with its defaults."""

from __future__ import annotations

import json

import pytest

from bench import tracking

pytestmark = pytest.mark.server

ENSEMBLE = "detect_tensorflow"  # the quickest bundled detector here


def test_the_slow_clip_meets_the_goal(triton_url):
    # One leg: each lane's pair crosses once, the person hidden 19 frames, the cat 36.
    result = tracking.measure(triton_url, [ENSEMBLE], ["slow"], legs=1)
    (row,) = result["results"]
    assert row["crossings"] == 2 and row["expected"] > 0
    assert row["meets_goal"], row
    assert row["idf1"] >= tracking.GOAL_IDF1 and row["id_switches"] <= row["crossings"]


def test_the_command_prints_the_table_and_keeps_the_figures(triton_url, tmp_path, capsys):
    argv = ["--url", triton_url, "--out", str(tmp_path), "--quick", "--speeds", "fast",
            "--ensembles", ENSEMBLE]  # fmt: skip
    assert tracking.main(argv) == 0
    (saved,) = tmp_path.glob("tracking-*.json")
    result = json.loads(saved.read_text())
    (row,) = result["results"]
    assert (row["speed"], row["ensemble"], row["meets_goal"]) == ("fast", ENSEMBLE, None)
    assert result["meta"]["tracker_settings"]["high_score"] == 0.4
    assert [c["speed"] for c in result["clips"]] == ["fast"]
    printed = capsys.readouterr().out
    assert f"| fast (12) | {ENSEMBLE} | {row['mota']:.3f} | {row['idf1']:.3f} |" in printed
