"""The web demo's pure parts: choices, captions, tables, timings, inputs, messages.

No server and no browser: what a server would say of its ensembles is built here as
``ModelInfo``/``DetectorInfo`` values, the way ``DetectorClient.model_info`` reads them
from the ensembles' configs.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from client import (
    Detection,
    DetectorInfo,
    ImageResult,
    InvalidImage,
    ModelInfo,
    ModelNotReady,
    ServerUnavailable,
)
from client.statistics import STEP_PHASES, between, read_statistics
from ensemble import contract
from ensemble.registry import RUNTIMES
from ui import app, common, photos, timings
from ui.catalog import Catalog, ServerModels, detector_caption, detector_captions, model_label
from ui.results import ResultFolders

pytestmark = pytest.mark.unit


# --- what a server with the default models file says of its ensembles ------------

RUNTIME_TITLES = {key: runtime.title for key, runtime in RUNTIMES.items()}


def served_detector(name: str, title: str, runtime: str) -> DetectorInfo:
    """A detector as a server describes it (an unknown runtime comes without a title)."""
    return DetectorInfo(name, title, runtime, runtime_title=RUNTIME_TITLES.get(runtime, ""))


PYTORCH = served_detector("pytorch", "NanoDet-m 416", "torchscript")
TENSORFLOW = served_detector("tensorflow", "SSD MobileNet v2 (COCO)", "savedmodel")
ONNXRUNTIME = served_detector("onnxruntime", "CenterNet MobileNetV3 512", "onnx")
DEFAULT_DETECTORS = (PYTORCH, TENSORFLOW, ONNXRUNTIME)
CAPTIONS = {
    "pytorch": "PyTorch (TorchScript) · NanoDet-m 416",
    "tensorflow": "TensorFlow (SavedModel) · SSD MobileNet v2 (COCO)",
    "onnxruntime": "ONNX Runtime · CenterNet MobileNetV3 512",
}


def _chain(name: str) -> tuple[str, ...]:
    return (f"preprocess_{name}", name, f"postprocess_{name}")


def _single(d: DetectorInfo) -> ModelInfo:
    steps = ("image_decode", *_chain(d.name))
    return ModelInfo(d.ensemble, d.title, contract.COCO80_LABELS, (d,), steps)


def _all(*detectors: DetectorInfo) -> ModelInfo:
    steps = ("image_decode", *(s for d in detectors for s in _chain(d.name)), "fuse_detections")
    title = f"All {len(detectors)} fused"
    return ModelInfo("detect_all", title, contract.COCO80_LABELS, detectors, steps)


DETECT_ALL = _all(*DEFAULT_DETECTORS)
INFOS = {info.name: info for info in [DETECT_ALL, *map(_single, DEFAULT_DETECTORS)]}


def _catalog(infos: dict[str, ModelInfo] = INFOS) -> Catalog:
    return Catalog(tuple(infos), infos)


# --- model choice, captions and examples ------------------------------------------


def test_choices_are_the_servers_ensembles_fused_first_captioned_by_runtime_and_title():
    assert _catalog().choices() == [
        ("All 3 fused", "detect_all"),
        ("PyTorch (TorchScript) · NanoDet-m 416", "detect_pytorch"),
        ("TensorFlow (SavedModel) · SSD MobileNet v2 (COCO)", "detect_tensorflow"),
        ("ONNX Runtime · CenterNet MobileNetV3 512", "detect_onnxruntime"),
    ]
    assert _catalog().default == "detect_all"


def test_choices_follow_a_models_file_with_other_detectors():
    parts = served_detector("parts_onnx", "Parts detector v3", "onnx")
    cars = served_detector("cars_tf", "Cars", "savedmodel")
    mine = served_detector("mine", "My own", "python")
    infos = {i.name: i for i in [_all(parts), *map(_single, (parts, cars, mine))]}
    assert _catalog(infos).choices() == [
        ("All 1 fused", "detect_all"),
        ("ONNX Runtime · Parts detector v3", "detect_parts_onnx"),
        ("TensorFlow (SavedModel) · Cars", "detect_cars_tf"),
        ("Python · My own", "detect_mine"),
    ]


def test_choices_follow_the_fused_detectors_order_whatever_the_index_order():
    index = ["detect_onnxruntime", "detect_mine", "detect_all", "detect_pytorch", "image_decode"]
    infos = {name: INFOS[name] for name in index if name in INFOS}
    catalog = Catalog.build(index + ["detect_tensorflow"], infos | INFOS)
    assert catalog.names == (
        "detect_all",
        "detect_pytorch",
        "detect_tensorflow",
        "detect_onnxruntime",
        "detect_mine",
    )
    ready = dict.fromkeys(index, True)
    assert app.status_text(ready, "h:1", order=catalog.names) == (
        "**Server: up** · ready: detect_all, detect_pytorch, detect_onnxruntime, detect_mine"
        " · Triton gRPC h:1"
    )


def test_a_server_without_detect_all_starts_on_its_first_ensemble():
    infos = {"detect_tensorflow": _single(TENSORFLOW)}
    assert _catalog(infos).default == "detect_tensorflow"
    assert Catalog().choices() == [] and Catalog().default is None


def test_an_unknown_runtime_is_shown_by_its_key_and_a_listed_unloaded_ensemble_by_its_name():
    jax = served_detector("jax", "DETR R50", "jax")
    assert detector_caption(jax) == "jax · DETR R50"
    catalog = Catalog(("detect_all", "detect_jax"), {"detect_jax": _single(jax)})
    assert catalog.choices() == [("detect_all", "detect_all"), ("jax · DETR R50", "detect_jax")]


def test_detectors_that_would_look_alike_get_their_names_in_the_caption():
    a = served_detector("parts_a", "YOLOv8n", "onnx")
    b = served_detector("parts_b", "YOLOv8n", "onnx")
    assert detector_captions([a, b, PYTORCH]) == {
        "parts_a": "ONNX Runtime · YOLOv8n (parts_a)",
        "parts_b": "ONNX Runtime · YOLOv8n (parts_b)",
        "pytorch": CAPTIONS["pytorch"],
    }


def test_detect_all_without_a_title_is_labelled_by_its_detector_count():
    untitled = ModelInfo("detect_all", "detect_all", (), (PYTORCH, ONNXRUNTIME), ())
    assert model_label(untitled) == "All 2 fused"


def test_a_page_gets_new_choices_only_when_the_servers_change_keeping_its_own_if_served():
    catalog = _catalog()
    assert app.choices_update(catalog, catalog.choices(), "detect_tensorflow") is None
    # Tuples come back from the browser as lists.
    assert app.choices_update(catalog, [list(c) for c in catalog.choices()], None) is None
    # A page built while the server was down has no choices until it answers.
    assert app.choices_update(catalog, [], None) == (catalog.choices(), "detect_all")
    smaller = _catalog({"detect_pytorch": INFOS["detect_pytorch"]})
    assert app.choices_update(smaller, catalog.choices(), "detect_pytorch") == (
        smaller.choices(),
        "detect_pytorch",
    )
    assert app.choices_update(smaller, catalog.choices(), "detect_all") == (
        smaller.choices(),
        "detect_pytorch",
    )


def test_example_photos_are_scikit_images_bundled_pngs():
    found = photos.example_photos()
    assert [p.stem for p in found] == list(photos.EXAMPLE_PHOTOS)
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in found)


def test_no_examples_without_scikit_image(monkeypatch):
    monkeypatch.setattr(photos.importlib.util, "find_spec", lambda name: None)
    assert photos.example_photos() == []


# --- detections table and gallery -------------------------------------------------


def _result(*dets: tuple[str, float, tuple[float, float, float, float]], jpeg=b"\xff\xd8j"):
    detections = [
        Detection(*box, score, contract.COCO80_LABELS.index(label), label)
        for label, score, box in dets
    ]
    return ImageResult(detections, jpeg)


def _detect_all_result() -> ImageResult:
    fused = _result(("person", 0.7166, (11.24, 11.2, 367.71, 509.8)), jpeg=b"fused")
    # Keyed by detector name in whatever order; the page follows the config's order.
    fused.per_detector = {
        "onnxruntime": _result(jpeg=b"ort"),
        "pytorch": _result(
            ("chair", 0.33, (275, 347, 500, 512)),
            ("person", 0.73, (14, 14, 364, 508)),
            jpeg=b"pt",
        ),
        "tensorflow": _result(("person", 0.81, (10, 10, 370, 510)), jpeg=b"tf"),
    }
    return fused


def test_detect_all_rows_list_the_fused_result_then_each_detector_in_pixels():
    views = photos.result_views(_detect_all_result(), DETECT_ALL)
    rows = photos.detection_rows(views)
    assert rows == [
        ["Fused (WBF)", "person", 0.717, 11.2, 11.2, 367.7, 509.8],
        [CAPTIONS["pytorch"], "person", 0.73, 14.0, 14.0, 364.0, 508.0],
        [CAPTIONS["pytorch"], "chair", 0.33, 275.0, 347.0, 500.0, 512.0],
        [CAPTIONS["tensorflow"], "person", 0.81, 10.0, 10.0, 370.0, 510.0],
    ]
    assert len(rows[0]) == len(photos.DETECTION_HEADERS)


def test_one_detector_shows_one_image_captioned_with_its_runtime_and_network():
    views = photos.result_views(_result(("cup", 0.95, (1, 2, 3, 4))), INFOS["detect_tensorflow"])
    assert [caption for caption, _ in views] == [CAPTIONS["tensorflow"]]
    assert photos.detection_rows(views)[0][:2] == [CAPTIONS["tensorflow"], "cup"]


def test_gallery_has_the_fused_image_then_each_detectors_in_the_configs_order():
    value = photos.gallery_value(photos.result_views(_detect_all_result(), DETECT_ALL))
    assert [item["caption"] for item in value] == ["Fused (WBF)", *CAPTIONS.values()]
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
        for f in ("success", *STEP_PHASES):
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


def test_steps_of_detect_all_are_its_configs_steps_decoding_first_fusion_last():
    steps = timings.ensemble_steps(DETECT_ALL.steps)
    assert steps[0].model == "image_decode"
    assert steps[-1].model == "fuse_detections"
    assert all(s.runs == 1 and s.label == s.model for s in steps)
    assert [s.model for s in steps] == list(DETECT_ALL.steps)
    assert {d.name for d in DEFAULT_DETECTORS} <= {s.model for s in steps}


def test_a_step_the_config_lists_twice_is_one_row_where_its_last_run_is():
    steps = timings.ensemble_steps(["image_decode", "draw", "detector", "draw"])
    assert [(s.model, s.runs) for s in steps] == [("image_decode", 1), ("detector", 1), ("draw", 2)]
    assert steps[-1].label == "draw (×2, mean per run)"


def test_timing_rows_give_each_steps_mean_over_the_runs_between_snapshots():
    steps = INFOS["detect_tensorflow"].steps
    assert steps == (
        "image_decode",
        "preprocess_tensorflow",
        "tensorflow",
        "postprocess_tensorflow",
    )
    before = {m: (10, _step(1.0 * 10, 2.0 * 10)) for m in [*steps, "detect_tensorflow"]}
    after = dict(before)
    # Two runs in the window: the detector took 1 ms queued + 100 ms computing on average.
    after["tensorflow"] = (12, _step(10 + 2 * 1.0, 20 + 2 * 100.0))
    for m in ["image_decode", "preprocess_tensorflow", "postprocess_tensorflow"]:
        after[m] = (12, _step(10 + 2 * 0.5, 20 + 2 * 4.5))
    after["detect_tensorflow"] = (12, _step(10, 20 + 2 * 120.0))
    rows = timings.timing_rows(
        0.1234,
        "detect_tensorflow",
        steps,
        read_statistics(_stats(before)),
        read_statistics(_stats(after)),
    )
    assert rows == [
        ["round trip (client)", 123.4],
        ["server total (detect_tensorflow)", 120.0],
        ["image_decode", 5.0],
        ["preprocess_tensorflow", 5.0],
        ["tensorflow", 101.0],
        ["postprocess_tensorflow", 5.0],
    ]


def test_a_step_with_no_run_in_the_window_has_no_time_and_is_reported_missing():
    before = read_statistics(_stats({"image_decode": (5, _step(1, 1))}))
    assert timings.mean_ms(before, before, "image_decode") is None
    assert timings.mean_ms(before, before, "not_there") is None
    steps = INFOS["detect_pytorch"].steps
    assert "image_decode" in timings.missing_steps(before, before, "detect_pytorch", steps)


def test_timing_rows_of_a_real_servers_statistics_have_a_time_for_every_step():
    """The two replies of tests/test_statistics.py, read around two requests to
    detect_all on a real server."""
    replies = json.loads((Path(__file__).parent / "data" / "triton_statistics.json").read_text())
    before, after = read_statistics(replies["before"]), read_statistics(replies["after"])
    rows = timings.timing_rows(1.0, "detect_all", DETECT_ALL.steps, before, after)
    assert [r[0] for r in rows[2:]] == list(DETECT_ALL.steps)
    assert all(isinstance(ms, float) and ms > 0 for _, ms in rows[1:])
    server_ms = between(before, after, "detect_all").duration("success").mean_ms
    assert rows[1] == ["server total (detect_all)", round(server_ms, 1)]
    assert timings.missing_steps(before, after, "detect_all", DETECT_ALL.steps) == []


def test_without_statistics_only_the_round_trip_is_shown():
    assert timings.timing_rows(0.5, "detect_all") == [["round trip (client)", 500.0]]


# --- inputs and messages ------------------------------------------------------------


class FakeClient:
    """Stands in for DetectorClient: records requests, answers or raises as told.

    It serves ``infos`` (default: the default models file's ensembles) and lists
    ``listed`` in its repository index (default: the same); ``down`` makes every
    question fail as an unreachable server does.
    """

    url = "fake:8001"

    def __init__(self, result=None, error=None, stats_error=None, infos=INFOS, down=False):
        self.result = result
        self.error = error
        self.stats_error = stats_error
        self.infos = dict(infos)
        self.listed = None
        self.down = down
        self.requests = []
        self.max_sides = []
        self.stats_calls = 0
        self.ready_calls = 0
        self.index_calls = 0

    def _answer(self):
        if self.down:
            raise ServerUnavailable(self.url)

    def ensembles(self):
        self.index_calls += 1
        self._answer()
        return list(self.infos) if self.listed is None else list(self.listed)

    def model_info(self, model="detect_all"):
        self._answer()
        if model not in self.infos:
            raise ModelNotReady(model, self.url, "not found")
        return self.infos[model]

    def detect(
        self, images, model, score_threshold, iou_threshold, timeout=None, annotated_max_side=None
    ):
        self.requests.append((images, model, score_threshold, iou_threshold))
        self.max_sides.append(annotated_max_side)
        if self.error:
            raise self.error
        self.result.latency_s = 0.25
        return [self.result]

    def inference_statistics(self, model=""):
        self.stats_calls += 1
        if self.stats_error:
            raise self.stats_error
        runs = 1 + self.stats_calls  # one more run of every model per snapshot
        names = {step for info in self.infos.values() for step in info.steps} | set(self.infos)
        return _stats({m: (runs, _step(runs, runs)) for m in names})

    def ready_models(self):
        self.ready_calls += 1
        if self.error:
            raise self.error
        return {"detect_all": True, "detect_pytorch": True, "detect_tensorflow": False}


def _upload(tmp_path, name="photo.png", data=b"\x89PNG..."):
    path = tmp_path / "gradio-cache-hash" / name / "upload"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return {"path": str(path), "orig_name": name, "url": None, "meta": {"_type": "gradio.FileData"}}


def test_a_detection_sends_the_upload_unchanged_with_the_chosen_thresholds(tmp_path):
    client = FakeClient(result=_detect_all_result())
    outcome = photos.PhotoDetector(client)(
        _upload(tmp_path, data=b"raw bytes"), "detect_all", 0.4, 0.6
    )
    assert client.requests == [([b"raw bytes"], "detect_all", 0.4, 0.6)]
    # annotated images sized for a screen, whatever the photo's size
    assert client.max_sides == [2048]
    assert outcome.message.startswith("1 object after fusion: person 0.72")
    assert len(outcome.views) == 4 and len(outcome.detections) == 4
    assert outcome.timings[0] == ["round trip (client)", 250.0]
    assert [row[0] for row in outcome.timings[2:]] == list(DETECT_ALL.steps)
    assert all(ms is not None for _, ms in outcome.timings)


def test_a_detection_on_a_non_default_server_uses_its_detectors_and_steps(tmp_path):
    parts = served_detector("parts_onnx", "Parts v3", "onnx")
    infos = {"detect_all": _all(parts), "detect_parts_onnx": _single(parts)}
    result = _result(("person", 0.9, (1, 2, 3, 4)))
    result.per_detector = {"parts_onnx": _result(("person", 0.9, (1, 2, 3, 4)))}
    client = FakeClient(result=result, infos=infos)
    outcome = photos.PhotoDetector(client)(_upload(tmp_path), "detect_all", 0.3, 0.5)
    assert [caption for caption, _ in outcome.views] == ["Fused (WBF)", "ONNX Runtime · Parts v3"]
    assert [row[0] for row in outcome.timings[2:]] == list(infos["detect_all"].steps)
    outcome = photos.PhotoDetector(client)(_upload(tmp_path, "b.png"), "detect_pytorch", 0.3, 0.5)
    assert outcome.message == (
        "**Error:** unknown model 'detect_pytorch': this server serves "
        "detect_all, detect_parts_onnx"
    )


def test_a_model_served_since_the_last_look_is_found_at_once(tmp_path):
    client = FakeClient(result=_result(), infos={"detect_all": DETECT_ALL})
    detector = photos.PhotoDetector(client, models=ServerModels(client, ttl_s=3600))
    assert detector.models.get()[0].names == ("detect_all",)
    client.infos["detect_pytorch"] = INFOS["detect_pytorch"]
    outcome = detector(_upload(tmp_path), "detect_pytorch", 0.3, 0.5)
    assert not outcome.message.startswith("**Error:**"), outcome.message
    assert client.requests[0][1] == "detect_pytorch"


def test_a_listed_model_that_is_not_loaded_gets_the_servers_reason(tmp_path):
    client = FakeClient(result=_result(), infos={"detect_all": DETECT_ALL})
    client.listed = ["detect_pytorch", "detect_all"]  # in the index, its config unreadable
    models = ServerModels(client)
    assert models.get()[0].choices() == [
        ("All 3 fused", "detect_all"),
        ("detect_pytorch", "detect_pytorch"),
    ]
    outcome = photos.PhotoDetector(client, models=models)(
        _upload(tmp_path), "detect_pytorch", 0.3, 0.5
    )
    assert outcome.message.startswith("**Error:** model 'detect_pytorch' is not ready")
    assert client.requests == []


def test_with_the_server_down_a_detection_says_so_and_sends_nothing(tmp_path):
    client = FakeClient(result=_result(), down=True)
    outcome = photos.PhotoDetector(client)(_upload(tmp_path), "detect_all", 0.3, 0.5)
    assert outcome.message.startswith("**Error:** Triton server at fake:8001 is not reachable")
    assert client.requests == []


def test_the_file_input_wins_over_the_image_input(tmp_path):
    client = FakeClient(result=_result())
    image = _upload(tmp_path, "a.png", b"image")
    (tmp_path / "other").mkdir()
    file = {"path": str(tmp_path / "other" / "f"), "orig_name": "f.bin"}
    (tmp_path / "other" / "f").write_bytes(b"file")
    photos.PhotoDetector(client)(image, "detect_pytorch", 0.3, 0.5, file)
    assert client.requests[0][0] == [b"file"]


def test_no_image_gives_a_message_and_sends_nothing():
    client = FakeClient(result=_result())
    outcome = photos.PhotoDetector(client)(None, "detect_all", 0.3, 0.5)
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
    outcome = photos.PhotoDetector(FakeClient(error=error))(
        _upload(tmp_path, name), "detect_all", 0.3, 0.5
    )
    assert outcome.message.startswith("**Error:** ") and expected in outcome.message
    assert "Traceback" not in outcome.message and "/tmp/gradio" not in outcome.message
    assert outcome.views == [] and outcome.detections == [] and outcome.timings == []


def test_an_unexpected_failure_is_one_line_too(tmp_path):
    outcome = photos.PhotoDetector(FakeClient(error=RuntimeError("boom\nline 2")))(
        _upload(tmp_path), "detect_all", 0.3, 0.5
    )
    assert outcome.message == "**Error:** unexpected RuntimeError: boom"


@pytest.mark.parametrize(
    ("model", "score", "iou", "expected"),
    [
        ("detect_everything", 0.3, 0.5, "unknown model 'detect_everything'"),
        (None, 0.3, 0.5, "no model chosen"),
        ("detect_all", 1.5, 0.5, "score threshold must be between 0 and 1"),
        ("detect_all", 0.3, "x", "IoU threshold must be a number"),
        ("detect_all", float("nan"), 0.5, "score threshold must be between 0 and 1"),
    ],
)
def test_bad_choices_are_refused_before_any_request(tmp_path, model, score, iou, expected):
    client = FakeClient(result=_result())
    outcome = photos.PhotoDetector(client)(_upload(tmp_path), model, score, iou)
    assert expected in outcome.message
    assert client.requests == []


def test_a_statistics_failure_never_breaks_the_detection(tmp_path):
    client = FakeClient(result=_result(("cup", 0.9, (1, 2, 3, 4))), stats_error=OSError("nope"))
    outcome = photos.PhotoDetector(client)(_upload(tmp_path), "detect_tensorflow", 0.3, 0.5)
    assert outcome.detections[0][1] == "cup"
    assert outcome.timings == [["round trip (client)", 250.0]]
    assert "server step times unavailable" in outcome.message


def test_an_expired_upload_asks_to_upload_again(tmp_path):
    gone = {"path": str(tmp_path / "gone.png"), "orig_name": "holiday.png"}
    with pytest.raises(common.InputError, match="holiday.png is no longer on this server"):
        photos.read_upload(gone)


def test_a_data_url_input_is_decoded():
    value = {"path": None, "url": "data:image/png;base64," + base64.b64encode(b"px").decode()}
    assert photos.read_upload(value).data == b"px"


# --- status line ----------------------------------------------------------------------


def test_status_names_the_servers_ready_and_unready_ensembles_fused_first():
    ready = {
        "image_decode": True,
        "detect_pytorch": True,
        "detect_tensorflow": False,
        "detect_all": True,
        "detect_parts_onnx": False,
        "parts_onnx": False,
    }
    assert app.status_text(ready, "h:1") == (
        "**Server: up** · ready: detect_all, detect_pytorch"
        " · not ready: detect_tensorflow, detect_parts_onnx · Triton gRPC h:1"
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


def test_the_models_are_asked_at_most_once_per_interval_and_kept_while_the_server_is_down():
    client = FakeClient()
    models = ServerModels(client, ttl_s=60)
    catalog, error = models.get()
    assert (catalog.names, error) == (tuple(INFOS), "")
    assert models.get()[0] is catalog and client.index_calls == 1
    client.down = True
    kept, error = models.get(max_age_s=0)
    assert kept is catalog
    assert error.startswith("Triton server at fake:8001 is not reachable")


def test_a_page_built_while_the_server_is_down_comes_up_and_fills_its_choices_later():
    import gradio as gr

    client = FakeClient(down=True)
    demo = app.build_app(client)
    assert isinstance(demo, gr.Blocks)
    (radio,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model-choice"]
    assert radio.choices == [] and radio.value is None
    client.down = False
    catalog, error = ServerModels(client, ttl_s=0).get()
    assert error == "" and catalog.choices()[0] == ("All 3 fused", "detect_all")
    assert app.choices_update(catalog, radio.choices, radio.value) == (
        catalog.choices(),
        "detect_all",
    )


def test_table_values_are_what_gradios_dataframe_makes_of_the_rows():
    import gradio as gr

    rows = [["round trip (client)", 12.5], ["image_decode", None]]
    table = gr.Dataframe(headers=photos.TIMING_HEADERS, datatype=["str", "number"])
    assert common.table_value(photos.TIMING_HEADERS, rows) == table.postprocess(rows).model_dump()


def test_success_message_names_the_five_best_and_counts_the_rest():
    names = contract.COCO80_LABELS[:8]
    dets = [(name, 0.3 + i / 100, (0.0, 0.0, 1.0, 1.0)) for i, name in enumerate(names)]
    text = photos.short_summary(_result(*dets))
    assert text.startswith(f"{names[7]} 0.37, {names[6]} 0.36")
    assert text.count(",") == 4 and text.endswith("(+3 more)")
    assert photos.short_summary(_result()) == "nothing found"


# --- downloads ----------------------------------------------------------------------


def test_downloads_are_each_views_jpeg_and_one_coco_json_of_every_table_row(tmp_path):
    views = photos.result_views(_detect_all_result(), INFOS["detect_all"], CAPTIONS)
    files = photos.write_downloads(ResultFolders(tmp_path), "my photo.png", views, "detect_all")
    jpegs, (coco,) = files[:-1], files[-1:]
    assert [p.read_bytes() for p in jpegs] == [b"fused", b"pt", b"tf", b"ort"]
    assert len({p.parent for p in files}) == 1 and files[0].parent.parent == tmp_path
    entries = json.loads(coco.read_text())
    # Every row of the detections table, as (model, label, score, x1, y1): bbox is xywh.
    rows = photos.detection_rows(views)
    got = sorted((e["model"], e["category_name"], e["score"], *e["bbox"][:2]) for e in entries)
    shown = sorted(tuple(r[:5]) for r in rows)
    assert [g[:2] for g in got] == [r[:2] for r in shown]
    for g, r in zip(got, shown, strict=True):  # the table rounds: 3 decimals, 0.1 px
        assert g[2:] == pytest.approx(r[2:], abs=0.051)
    person = next(e for e in entries if e["model"] == "Fused (WBF)")
    assert person["bbox"] == [11.24, 11.2, 356.47, 498.6] and person["category_id"] == 1
    assert {e["file_name"] for e in entries} == {"my photo.png"}
