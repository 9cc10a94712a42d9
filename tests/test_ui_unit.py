"""The web demo's pure parts: tables, timings, inputs, messages. No server, no browser."""

from __future__ import annotations

import base64

import pytest

from client import Detection, ImageResult, InvalidImage, ModelNotReady, ServerUnavailable
from ensemble import contract
from ui import app, timings

# --- model choice and examples ---------------------------------------------------


def test_choice_labels_map_to_the_contract_ensembles():
    assert app.MODEL_CHOICES == [
        ("All three + fused", "detect_all"),
        ("PyTorch · NanoDet-m", "detect_pytorch"),
        ("TensorFlow · SSD MobileNet v2", "detect_tensorflow"),
        ("ONNX Runtime · CenterNet", "detect_onnxruntime"),
    ]
    assert {value for _, value in app.MODEL_CHOICES} == set(contract.ENSEMBLES)


def test_a_framework_without_a_short_name_is_shown_with_its_contract_titles():
    new = contract.Framework("jax", "JAX", "detr", "DETR R50")
    assert app.framework_caption(new) == "JAX · DETR R50"


def test_example_photos_are_scikit_images_bundled_pngs():
    photos = app.example_photos()
    assert [p.stem for p in photos] == list(app.EXAMPLE_PHOTOS)
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in photos)


def test_no_examples_without_scikit_image(monkeypatch):
    monkeypatch.setattr(app.importlib.util, "find_spec", lambda name: None)
    assert app.example_photos() == []


# --- detections table and gallery -------------------------------------------------


def _result(*dets: tuple[str, float, tuple[float, float, float, float]], jpeg=b"\xff\xd8j"):
    detections = [
        Detection(*box, score, contract.COCO80_LABELS.index(label), label)
        for label, score, box in dets
    ]
    return ImageResult(detections, jpeg)


def _detect_all_result() -> ImageResult:
    fused = _result(("person", 0.7166, (11.24, 11.2, 367.71, 509.8)), jpeg=b"fused")
    fused.per_framework = {
        "pytorch": _result(
            ("chair", 0.33, (275, 347, 500, 512)),
            ("person", 0.73, (14, 14, 364, 508)),
            jpeg=b"pt",
        ),
        "tensorflow": _result(("person", 0.81, (10, 10, 370, 510)), jpeg=b"tf"),
        "onnxruntime": _result(jpeg=b"ort"),
    }
    return fused


def test_detect_all_rows_list_the_fused_result_then_each_framework_in_pixels():
    views = app.result_views(_detect_all_result(), "detect_all")
    rows = app.detection_rows(views)
    assert rows == [
        ["Fused (WBF)", "person", 0.717, 11.2, 11.2, 367.7, 509.8],
        ["PyTorch · NanoDet-m", "person", 0.73, 14.0, 14.0, 364.0, 508.0],
        ["PyTorch · NanoDet-m", "chair", 0.33, 275.0, 347.0, 500.0, 512.0],
        ["TensorFlow · SSD MobileNet v2", "person", 0.81, 10.0, 10.0, 370.0, 510.0],
    ]
    assert len(rows[0]) == len(app.DETECTION_HEADERS)


def test_one_detector_shows_one_image_captioned_with_its_framework_and_network():
    views = app.result_views(_result(("cup", 0.95, (1, 2, 3, 4))), "detect_tensorflow")
    assert [caption for caption, _ in views] == ["TensorFlow · SSD MobileNet v2"]
    assert app.detection_rows(views)[0][:2] == ["TensorFlow · SSD MobileNet v2", "cup"]


def test_gallery_carries_the_servers_jpegs_inline_with_captions():
    value = app.gallery_value(app.result_views(_detect_all_result(), "detect_all"))
    assert [item["caption"] for item in value] == [
        "Fused (WBF)",
        "PyTorch · NanoDet-m",
        "TensorFlow · SSD MobileNet v2",
        "ONNX Runtime · CenterNet",
    ]
    first = value[0]["image"]
    assert first["path"] is None  # nothing on disk for Gradio to serve or keep
    head, _, data = first["url"].partition(",")
    assert head == "data:image/jpeg;base64"
    assert base64.b64decode(data) == b"fused"


# --- timings from two statistics snapshots ---------------------------------------


def _stats(counts: dict[str, tuple[int, dict[str, int]]]) -> dict:
    """A get_inference_statistics JSON reply: model -> (runs, {field: total ns})."""
    models = []
    for name, (runs, ns) in counts.items():
        inference = {"fail": {}, "cache_hit": {}, "cache_miss": {}}
        for f in timings.ALL_FIELDS:
            # Triton writes 64-bit numbers as strings and leaves untouched fields empty.
            inference[f] = {"count": str(runs), "ns": str(ns.get(f, 0))} if runs else {}
        models.append({"name": name, "version": "1", "inference_stats": inference})
    return {"model_stats": models}


def _step(ms_queue: float, ms_compute: float) -> dict[str, int]:
    return {
        "queue": int(ms_queue * 1e6),
        "compute_input": 0,
        "compute_infer": int(ms_compute * 1e6),
        "compute_output": 0,
        "success": int((ms_queue + ms_compute) * 1e6),
    }


def test_parse_statistics_reads_string_counters_and_empty_fields():
    snap = timings.parse_statistics(_stats({"a": (3, {"queue": 30}), "b": (0, {})}))
    assert snap["a"]["queue"] == (3, 30)
    assert snap["b"]["compute_infer"] == (0, 0)


def test_steps_of_detect_all_start_with_decoding_and_end_with_fusion():
    steps = timings.ensemble_steps("detect_all")
    assert steps[0].model == "image_decode"
    assert steps[-1].model == "fuse_detections"
    assert all(s.runs == 1 and s.label == s.model for s in steps)
    assert len({s.model for s in steps}) == len(steps) == 1 + 3 * 3 + 1
    assert {f.detector for f in contract.FRAMEWORKS} <= {s.model for s in steps}


def test_timing_rows_give_each_steps_mean_over_the_runs_between_snapshots():
    steps = [s.model for s in timings.ensemble_steps("detect_tensorflow")]
    assert steps == [
        "image_decode",
        "preprocess_ssd",
        "ssd_mobilenet_v2",
        "postprocess_ssd",
    ]
    before = {m: (10, _step(1.0 * 10, 2.0 * 10)) for m in [*steps, "detect_tensorflow"]}
    after = dict(before)
    # Two runs in the window: ssd took 1 ms queued + 100 ms computing on average.
    after["ssd_mobilenet_v2"] = (12, _step(10 + 2 * 1.0, 20 + 2 * 100.0))
    for m in ["image_decode", "preprocess_ssd", "postprocess_ssd"]:
        after[m] = (12, _step(10 + 2 * 0.5, 20 + 2 * 4.5))
    after["detect_tensorflow"] = (12, _step(10, 20 + 2 * 120.0))
    rows = timings.timing_rows(
        0.1234,
        "detect_tensorflow",
        timings.parse_statistics(_stats(before)),
        timings.parse_statistics(_stats(after)),
    )
    assert rows == [
        ["round trip (client)", 123.4],
        ["server total (detect_tensorflow)", 120.0],
        ["image_decode", 5.0],
        ["preprocess_ssd", 5.0],
        ["ssd_mobilenet_v2", 101.0],
        ["postprocess_ssd", 5.0],
    ]


def test_a_step_with_no_run_in_the_window_has_no_time_and_is_reported_missing():
    before = timings.parse_statistics(_stats({"image_decode": (5, _step(1, 1))}))
    assert timings.mean_ms(before, before, "image_decode") is None
    assert timings.mean_ms(before, before, "not_there") is None
    assert "image_decode" in timings.missing_steps(before, before, "detect_pytorch")


def test_without_statistics_only_the_round_trip_is_shown():
    assert timings.timing_rows(0.5, "detect_all") == [["round trip (client)", 500.0]]


# --- inputs and messages ------------------------------------------------------------


class FakeClient:
    """Stands in for DetectorClient: records requests, answers or raises as told."""

    url = "fake:8001"

    def __init__(self, result=None, error=None, stats_error=None):
        self.result = result
        self.error = error
        self.stats_error = stats_error
        self.requests = []
        self.stats_calls = 0
        self.ready_calls = 0

    def detect(self, images, model, score_threshold, iou_threshold, timeout=None):
        self.requests.append((images, model, score_threshold, iou_threshold))
        if self.error:
            raise self.error
        self.result.latency_s = 0.25
        return [self.result]

    def inference_statistics(self, model=""):
        self.stats_calls += 1
        if self.stats_error:
            raise self.stats_error
        runs = 1 + self.stats_calls  # one more run of every model per snapshot
        names = [s.model for s in timings.ensemble_steps("detect_all")] + ["detect_all"]
        return _stats({m: (runs, _step(runs, runs)) for m in names})

    def ready_models(self):
        self.ready_calls += 1
        if self.error:
            raise self.error
        return {"detect_all": True, "detect_pytorch": True, "detect_tensorflow": False}


def _upload(tmp_path, name="photo.png", data=b"\x89PNG..."):
    path = tmp_path / "gradio-cache-hash" / "upload"
    path.parent.mkdir()
    path.write_bytes(data)
    return {"path": str(path), "orig_name": name, "url": None, "meta": {"_type": "gradio.FileData"}}


def test_a_detection_sends_the_upload_unchanged_with_the_chosen_thresholds(tmp_path):
    client = FakeClient(result=_detect_all_result())
    outcome = app.Detector(client)(_upload(tmp_path, data=b"raw bytes"), "detect_all", 0.4, 0.6)
    assert client.requests == [([b"raw bytes"], "detect_all", 0.4, 0.6)]
    assert outcome.message.startswith("1 object after fusion: person 0.72")
    assert len(outcome.views) == 4 and len(outcome.detections) == 4
    assert outcome.timings[0] == ["round trip (client)", 250.0]
    assert len(outcome.timings) == 2 + len(timings.ensemble_steps("detect_all"))


def test_the_file_input_wins_over_the_image_input(tmp_path):
    client = FakeClient(result=_result())
    image = _upload(tmp_path, "a.png", b"image")
    (tmp_path / "other").mkdir()
    file = {"path": str(tmp_path / "other" / "f"), "orig_name": "f.bin"}
    (tmp_path / "other" / "f").write_bytes(b"file")
    app.Detector(client)(image, "detect_pytorch", 0.3, 0.5, file)
    assert client.requests[0][0] == [b"file"]


def test_no_image_gives_a_message_and_sends_nothing():
    client = FakeClient(result=_result())
    outcome = app.Detector(client)(None, "detect_all", 0.3, 0.5)
    assert outcome.message.startswith("**Error:** no image given")
    assert client.requests == [] and outcome.views == []


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ServerUnavailable("fake:8001"), "Triton server at fake:8001 is not reachable"),
        (ModelNotReady("detect_all", "fake:8001"), "model 'detect_all' is not ready"),
        (
            InvalidImage("/tmp/gradio/0123abcd/notes.txt", "not an image in a supported format"),
            "not an image: notes.txt (server said: not an image in a supported format)",
        ),
    ],
)
def test_client_errors_become_one_line_on_the_page(tmp_path, error, expected):
    name = "notes.txt" if isinstance(error, InvalidImage) else "photo.png"
    outcome = app.Detector(FakeClient(error=error))(_upload(tmp_path, name), "detect_all", 0.3, 0.5)
    assert outcome.message.startswith("**Error:** ") and expected in outcome.message
    assert "Traceback" not in outcome.message and "/tmp/gradio" not in outcome.message
    assert outcome.views == [] and outcome.detections == [] and outcome.timings == []


def test_an_unexpected_failure_is_one_line_too(tmp_path):
    outcome = app.Detector(FakeClient(error=RuntimeError("boom\nline 2")))(
        _upload(tmp_path), "detect_all", 0.3, 0.5
    )
    assert outcome.message == "**Error:** unexpected RuntimeError: boom"


@pytest.mark.parametrize(
    ("model", "score", "iou", "expected"),
    [
        ("detect_everything", 0.3, 0.5, "unknown model 'detect_everything'"),
        ("detect_all", 1.5, 0.5, "score threshold must be between 0 and 1"),
        ("detect_all", 0.3, "x", "IoU threshold must be a number"),
        ("detect_all", float("nan"), 0.5, "score threshold must be between 0 and 1"),
    ],
)
def test_bad_choices_are_refused_before_any_request(tmp_path, model, score, iou, expected):
    client = FakeClient(result=_result())
    outcome = app.Detector(client)(_upload(tmp_path), model, score, iou)
    assert expected in outcome.message
    assert client.requests == []


def test_a_statistics_failure_never_breaks_the_detection(tmp_path):
    client = FakeClient(result=_result(("cup", 0.9, (1, 2, 3, 4))), stats_error=OSError("nope"))
    outcome = app.Detector(client)(_upload(tmp_path), "detect_tensorflow", 0.3, 0.5)
    assert outcome.detections[0][1] == "cup"
    assert outcome.timings == [["round trip (client)", 250.0]]
    assert "server step times unavailable" in outcome.message


def test_an_expired_upload_asks_to_upload_again(tmp_path):
    gone = {"path": str(tmp_path / "gone.png"), "orig_name": "holiday.png"}
    with pytest.raises(app.InputError, match="holiday.png is no longer on this server"):
        app.read_upload(gone)


def test_a_data_url_input_is_decoded():
    value = {"path": None, "url": "data:image/png;base64," + base64.b64encode(b"px").decode()}
    assert app.read_upload(value).data == b"px"


# --- status line ----------------------------------------------------------------------


def test_status_names_ready_and_unready_ensembles():
    text = app.status_text({"detect_all": True, "detect_pytorch": True}, "h:1")
    assert text == (
        "**Server: up** · ready: detect_all, detect_pytorch"
        " · not ready: detect_tensorflow, detect_onnxruntime · Triton gRPC h:1"
    )
    assert app.status_text(None, "h:1", "Triton server at h:1 is not reachable").startswith(
        "**Server: down** (Triton server at h:1"
    )


def test_status_asks_the_server_at_most_once_per_interval_for_all_pages():
    client = FakeClient()
    status = app.StatusLine(client, ttl_s=60)
    assert status() == status()
    assert client.ready_calls == 1
    assert "ready: detect_all, detect_pytorch · not ready: detect_tensorflow" in status()


def test_status_says_down_when_the_server_does_not_answer():
    status = app.StatusLine(FakeClient(error=ServerUnavailable("fake:8001")), ttl_s=0)
    assert status().startswith("**Server: down** (Triton server at fake:8001 is not reachable")


def test_table_values_are_what_gradios_dataframe_makes_of_the_rows():
    import gradio as gr

    rows = [["round trip (client)", 12.5], ["image_decode", None]]
    table = gr.Dataframe(headers=app.TIMING_HEADERS, datatype=["str", "number"])
    assert app.table_value(app.TIMING_HEADERS, rows) == table.postprocess(rows).model_dump()


def test_success_message_names_the_five_best_and_counts_the_rest():
    names = contract.COCO80_LABELS[:8]
    dets = [(name, 0.3 + i / 100, (0.0, 0.0, 1.0, 1.0)) for i, name in enumerate(names)]
    text = app.short_summary(_result(*dets))
    assert text.startswith(f"{names[7]} 0.37, {names[6]} 0.36")
    assert text.count(",") == 4 and text.endswith("(+3 more)")
    assert app.short_summary(_result()) == "nothing found"
