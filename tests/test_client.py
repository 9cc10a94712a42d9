"""The client's pure parts, and its behaviour when no server listens (real, no mock).

What the client learns of a server (titles, labels, detectors, steps) it reads from the
ensembles' configs; those are the ones ``ensemble.configgen`` generates, shaped as
``get_model_config(as_json=True)`` returns them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from client import cli, connection, environment, errors, payload
from client.api import DetectorClient
from client.errors import (
    ImageNotReadable,
    InferenceFailed,
    InvalidImage,
    ModelNotReady,
    ServerUnavailable,
)
from client.payload import DetectOptions
from client.results import (
    Detection,
    DetectorInfo,
    ImageResult,
    ModelInfo,
    labels_from_config,
    parse_image_results,
    to_coco_results,
)
from client.retry import run_isolating
from ensemble import configgen, spec
from ensemble.contract import (
    ANNOTATED_IMAGE,
    COCO80_LABELS,
    DETECT_ALL,
    DETECTIONS,
    DETECTORS_PARAMETER,
    IMAGE,
    IOU_THRESHOLD,
    LABELS_PARAMETER,
    MAX_BATCH_SIZE,
    MAX_DETECTIONS,
    NUM_DETECTIONS,
    SCORE_THRESHOLD,
    TITLE_PARAMETER,
    detector_outputs,
    ensemble_name,
    output_prefix,
)
from ensemble.processes import free_port
from ensemble.registry import load_models

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[1]
PNG_HEAD = b"\x89PNG\r\n\x1a\n"
LABELS = list(COCO80_LABELS)
REGISTRY = load_models()  # the committed models.toml: pytorch, tensorflow, onnxruntime
NAMES = [d.name for d in REGISTRY.detectors]


def served_config(name: str) -> dict:
    """The generated config of ensemble ``name``, as ``get_model_config(as_json=True)``
    returns it from a server of the committed models file."""
    ens = spec.repository_spec(REGISTRY).ensemble(name)
    config = configgen.ensemble_config(ens, configgen.make_target("cpu"))
    reply = service_pb2.ModelConfigResponse(config=config)
    # as tritonclient.grpc's get_model_config(as_json=True) turns its reply into JSON
    return json.loads(json_format.MessageToJson(reply, preserving_proto_field_name=True))


def reply_arrays(rows_per_image: list[list[list[float]]], prefix: str = "") -> dict:
    """Output arrays shaped as the contract says, padded with junk after the real rows."""
    batch = len(rows_per_image)
    dets = np.full((batch, MAX_DETECTIONS, 6), 7.0, dtype=np.float32)  # junk padding
    nums = np.zeros((batch, 1), dtype=np.int32)
    jpegs = np.empty((batch, 1), dtype=object)
    for i, rows in enumerate(rows_per_image):
        if rows:
            dets[i, : len(rows)] = rows
        nums[i, 0] = len(rows)
        jpegs[i, 0] = b"\xff\xd8\xff" + prefix.encode() + bytes([i])
    return {
        prefix + DETECTIONS: dets,
        prefix + NUM_DETECTIONS: nums,
        prefix + ANNOTATED_IMAGE: jpegs,
    }


def server_error(code: grpc.StatusCode, msg: str) -> InferenceServerException:
    # tritonclient.grpc builds its exceptions this way from a grpc.RpcError.
    return InferenceServerException(msg=msg, status=str(code), debug_details="")


# --- parsing -------------------------------------------------------------------


def test_parse_reads_only_the_first_num_detections_rows():
    arrays = reply_arrays([[[10, 20, 110, 220, 0.9, 0], [5, 5, 15, 25, 0.4, 41]], []])
    results = parse_image_results(arrays, LABELS, sources=["a.jpg", "b.jpg"], latency_s=0.5)

    assert [len(r.detections) for r in results] == [2, 0]
    person, cup = results[0].detections
    assert person == Detection(10.0, 20.0, 110.0, 220.0, pytest.approx(0.9), 0, "person")
    assert (cup.class_id, cup.label) == (41, "cup")
    assert person.box_xywh == (10.0, 20.0, 100.0, 200.0)
    assert results[1].annotated_jpeg == b"\xff\xd8\xff\x01"
    assert [r.source for r in results] == ["a.jpg", "b.jpg"]
    assert results[0].latency_s == 0.5
    assert results[0].per_detector == {}


def test_parse_clamps_a_count_outside_the_rows():
    arrays = reply_arrays([[[0, 0, 1, 1, 0.5, 3]]])
    arrays[NUM_DETECTIONS][0, 0] = MAX_DETECTIONS + 50
    [too_many] = parse_image_results(arrays, LABELS)
    assert len(too_many.detections) == MAX_DETECTIONS

    arrays[NUM_DETECTIONS][0, 0] = -1
    [negative] = parse_image_results(arrays, LABELS)
    assert negative.detections == []


def test_parse_detect_all_fills_per_detector_results():
    arrays = reply_arrays([[[0, 0, 10, 10, 0.8, 16]]])  # fused: one dog
    for n, name in enumerate(NAMES, start=1):
        arrays.update(reply_arrays([[[0, 0, 10, 10, 0.5, 16]] * n], output_prefix(name)))

    [result] = parse_image_results(arrays, LABELS, NAMES, sources=["a.jpg"])

    assert len(result.detections) == 1
    assert list(result.per_detector) == NAMES == ["pytorch", "tensorflow", "onnxruntime"]
    assert [len(r.detections) for r in result.per_detector.values()] == [1, 2, 3]
    own = result.per_detector["pytorch"]
    assert own.detections[0].label == "dog"
    assert own.annotated_jpeg.endswith(output_prefix("pytorch").encode() + b"\x00")
    assert own.source == "a.jpg"


def test_parse_names_the_fused_classes_from_the_union_and_each_detectors_from_its_own():
    labels = ["cat", "dog", "car"]  # detect_all's union: the fused class ids index it
    arrays = reply_arrays([[[0, 0, 10, 10, 0.8, 2]]])
    arrays.update(reply_arrays([[[0, 0, 10, 10, 0.5, 1]]], output_prefix("pets")))
    [result] = parse_image_results(
        arrays, labels, ["pets"], detector_labels={"pets": ["hamster", "dog"]}
    )
    assert result.detections[0].label == "car"
    assert result.per_detector["pets"].detections[0].label == "dog"
    [shared] = parse_image_results(arrays, labels, ["pets"])  # no own labels given
    assert shared.per_detector["pets"].detections[0].label == "dog"


def test_parse_reports_a_missing_detector_output():
    arrays = reply_arrays([[]])
    with pytest.raises(InferenceFailed, match="PETS_DETECTIONS"):
        parse_image_results(arrays, LABELS, ["pets"])


def test_parse_reports_a_missing_output():
    arrays = reply_arrays([[]])
    del arrays[NUM_DETECTIONS]
    with pytest.raises(InferenceFailed, match=NUM_DETECTIONS):
        parse_image_results(arrays, LABELS)


def test_parse_reports_a_detections_tensor_of_the_wrong_shape():
    arrays = reply_arrays([[]])
    arrays[DETECTIONS] = arrays[DETECTIONS][:, :, :4]
    with pytest.raises(InferenceFailed, match="shape"):
        parse_image_results(arrays, LABELS)


def test_unknown_class_id_gets_a_readable_label():
    [result] = parse_image_results(reply_arrays([[[0, 0, 1, 1, 0.5, 80]]]), LABELS)
    assert result.detections[0].label == "class 80"


def test_summary_lists_labels_by_descending_score():
    dets = [Detection(0, 0, 1, 1, 0.41, 41, "cup"), Detection(0, 0, 1, 1, 0.92, 0, "person")]
    assert ImageResult(dets, b"").summary() == "person 0.92, cup 0.41"
    assert ImageResult([], b"").summary() == "nothing found"


def test_labels_come_from_the_config_parameter():
    config = {"config": {"parameters": {LABELS_PARAMETER: {"string_value": '["a", "b"]'}}}}
    assert labels_from_config(config, "m") == ["a", "b"]
    assert labels_from_config({"config": {}}, "m") == LABELS


def test_labels_that_are_not_a_json_list_of_strings_are_refused():
    config = {"config": {"parameters": {LABELS_PARAMETER: {"string_value": '{"a": 1}'}}}}
    with pytest.raises(InferenceFailed, match="not a JSON list"):
        labels_from_config(config, "m")


# --- what the server says of its ensembles ------------------------------------------


def test_model_info_of_detect_all_lists_the_fused_detectors_and_its_steps():
    info = ModelInfo.from_config(served_config(DETECT_ALL), DETECT_ALL)
    assert info.name == DETECT_ALL
    assert info.labels == COCO80_LABELS
    assert info.detectors == tuple(
        DetectorInfo(d.name, d.title, d.runtime, d.labels, d.runtime_info.title)
        for d in REGISTRY.fused
    )
    assert info.detectors[0] == DetectorInfo(
        "pytorch", "NanoDet-m 416", "torchscript", COCO80_LABELS, "PyTorch (TorchScript)"
    )
    assert info.detectors[0].ensemble == "detect_pytorch"
    assert info.per_detector_outputs == info.detectors
    assert info.steps[0] == "image_decode" and info.steps[-1] == "fuse_detections"
    assert {"preprocess_pytorch", "pytorch", "postprocess_tensorflow"} <= set(info.steps)


def test_model_info_of_one_detector_names_it_and_returns_no_per_detector_outputs():
    info = ModelInfo.from_config(served_config("detect_onnxruntime"), "detect_onnxruntime")
    assert info.title == REGISTRY["onnxruntime"].title
    assert info.detectors == (
        DetectorInfo(
            "onnxruntime", "CenterNet MobileNetV3 512", "onnx", COCO80_LABELS, "ONNX Runtime"
        ),
    )
    assert info.per_detector_outputs == ()
    assert info.steps == ("preprocess_onnxruntime", "onnxruntime", "postprocess_onnxruntime")


def test_model_info_reads_title_labels_and_detectors_from_the_parameters():
    detectors = [{"name": "parts", "title": "Parts v3", "runtime": "onnx"}, {"name": "x"}]
    config = {
        "config": {
            "name": "detect_all",
            "parameters": {
                TITLE_PARAMETER: {"string_value": "Everything"},
                LABELS_PARAMETER: {"string_value": '["bolt", "nut"]'},
                DETECTORS_PARAMETER: {"string_value": json.dumps(detectors)},
            },
        }
    }
    info = ModelInfo.from_config(config, DETECT_ALL)
    assert (info.title, info.labels) == ("Everything", ("bolt", "nut"))
    # a detector without title or runtime is named by its name
    assert info.detectors == (DetectorInfo("parts", "Parts v3", "onnx"), DetectorInfo("x", "x", ""))


def test_model_info_of_a_config_without_parameters_falls_back_to_coco():
    info = ModelInfo.from_config({"config": {"name": "yolo"}}, "yolo")
    assert (info.name, info.title, info.labels) == ("yolo", "yolo", COCO80_LABELS)
    assert info.detectors == () and info.steps == ()


# --- COCO results ------------------------------------------------------------------


def test_coco_results_use_coco91_ids_and_xywh_pixels():
    dets = [
        Detection(10.0, 20.0, 40.0, 60.0, 0.9, 0, "person"),  # COCO id 1
        Detection(1.0, 2.0, 3.0, 5.0, 0.5, 11, "stop sign"),  # COCO id 13 (12 is unused)
        Detection(0.0, 0.0, 8.0, 8.0, 0.3, 79, "toothbrush"),  # COCO id 90
    ]
    entries = to_coco_results(
        ImageResult(dets, b""), image_id=139, file_name="000000000139.jpg", model=DETECT_ALL
    )
    assert [e["category_id"] for e in entries] == [1, 13, 90]
    assert [e["category_name"] for e in entries] == ["person", "stop sign", "toothbrush"]
    assert entries[0]["bbox"] == [10.0, 20.0, 30.0, 40.0]
    assert entries[1]["bbox"] == [1.0, 2.0, 2.0, 3.0]
    assert entries[0] | {"bbox": None} == {
        "image_id": 139,
        "file_name": "000000000139.jpg",
        "category_id": 1,
        "category_name": "person",
        "bbox": None,
        "score": 0.9,
        "model": DETECT_ALL,
    }


def test_coco_results_of_own_labels_count_category_ids_from_one():
    dets = [Detection(0, 0, 1, 1, 0.9, 0, "bolt"), Detection(0, 0, 1, 1, 0.8, 2, "car")]
    entries = to_coco_results(ImageResult(dets, b""), image_id=1, file_name="a", model="m")
    # "car" is COCO-80 class 2 but not at index 2 of these labels: index + 1
    assert [(e["category_id"], e["category_name"]) for e in entries] == [(1, "bolt"), (3, "car")]


def test_coco_results_of_detect_all_tag_each_detector_with_its_ensemble():
    fused = ImageResult([Detection(0, 0, 2, 2, 0.9, 2, "car")], b"")
    fused.per_detector["pytorch"] = ImageResult([Detection(0, 0, 1, 1, 0.7, 2, "car")], b"")
    entries = to_coco_results(fused, image_id=1, file_name="x.jpg", model=DETECT_ALL)
    assert [e["model"] for e in entries] == [DETECT_ALL]  # the fused detections only
    entries = to_coco_results(
        fused, image_id=1, file_name="x.jpg", model=DETECT_ALL, per_detector=True
    )
    assert [(e["model"], e["category_id"]) for e in entries] == [
        (DETECT_ALL, 3),
        (ensemble_name("pytorch"), 3),
    ]
    assert ensemble_name("pytorch") == "detect_pytorch"


def test_coco_image_ids_follow_coco_file_names_else_count_from_one():
    coco = [Path("000000000139.jpg"), Path("d/000000000285.jpg")]
    assert cli.coco_image_ids(coco) == [139, 285]
    assert cli.coco_image_ids([Path("cat.jpg"), Path("12.jpg")]) == [1, 2]


# --- batching, inputs, files -------------------------------------------------------------


def test_twenty_images_go_in_batches_of_8_8_4():
    batches = payload.split_batches(list(range(20)))
    assert MAX_BATCH_SIZE == 8
    assert [len(b) for b in batches] == [8, 8, 4]
    assert [i for b in batches for i in b] == list(range(20))


def test_batch_size_above_the_servers_limit_is_refused():
    with pytest.raises(ValueError, match=str(MAX_BATCH_SIZE)):
        payload.split_batches(list(range(3)), MAX_BATCH_SIZE + 1)


def test_threshold_tensors_are_sent_only_when_given():
    [image] = payload.build_inputs([b"a", b"b"])
    assert (image.name(), image.datatype(), image.shape()) == (IMAGE, "BYTES", [2, 1])

    options = DetectOptions(score_threshold=0.25, iou_threshold=0.6)
    inputs = payload.build_inputs([b"a", b"b"], options)
    assert [(t.name(), t.datatype(), t.shape()) for t in inputs[1:]] == [
        (SCORE_THRESHOLD, "FP32", [2, 1]),
        (IOU_THRESHOLD, "FP32", [2, 1]),
    ]
    inputs = payload.build_inputs([b"a"], DetectOptions(iou_threshold=0.5))
    assert [t.name() for t in inputs] == [IMAGE, IOU_THRESHOLD]


def test_the_annotated_images_longest_side_is_sent_only_when_given():
    inputs = payload.build_inputs([b"a", b"b", b"c"], DetectOptions(annotated_max_side=1280))
    side = inputs[-1]
    assert (side.name(), side.datatype(), side.shape()) == ("ANNOTATED_MAX_SIDE", "INT32", [3, 1])
    assert [t.name() for t in payload.build_inputs([b"a"])] == [IMAGE]


@pytest.mark.parametrize(
    "options, words",
    [
        ({"score_threshold": 1.5}, "score_threshold must be between 0 and 1, got 1.5"),
        ({"iou_threshold": -0.1}, "iou_threshold must be between 0 and 1, got -0.1"),
        ({"annotated_max_side": -1}, "0 \\(full size\\) to 65500 pixels, got -1"),
    ],
)
def test_options_out_of_range_are_refused_before_any_connection(options, words):
    with pytest.raises(ValueError, match=words):
        DetectOptions(**options)
    # nothing listens there: reaching the network would raise ServerUnavailable
    with DetectorClient(f"127.0.0.1:{free_port()}") as client, pytest.raises(ValueError):
        client.detect([PNG_HEAD], **options)


def test_detect_all_requests_every_fused_detector_output():
    names = payload.output_names(ModelInfo.from_config(served_config(DETECT_ALL)))
    for name in NAMES:
        assert set(detector_outputs(name)) <= set(names)
    assert len(names) == 3 * (1 + len(NAMES)) + 1  # and the fused ALTERNATIVE_LABELS
    one = ModelInfo.from_config(served_config("detect_pytorch"))
    assert payload.output_names(one) == [DETECTIONS, NUM_DETECTIONS, ANNOTATED_IMAGE]


def test_directories_are_searched_recursively_for_images_by_extension(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.jpg", "a/b/y.PNG", "a/b/notes.txt", "a/z.webp"):
        (tmp_path / name).write_bytes(b"")
    explicit = tmp_path / "notes.md"
    explicit.write_text("kept: named explicitly")

    found = cli.expand_inputs([tmp_path / "a", explicit, tmp_path / "a" / "x.jpg", "missing.jpg"])

    assert found == [
        tmp_path / "a/b/y.PNG",
        tmp_path / "a/x.jpg",
        tmp_path / "a/z.webp",
        explicit,
        Path("missing.jpg"),
    ]


def test_output_stems_do_not_collide():
    assert cli.output_stems([Path("a/x.jpg"), Path("b/x.png"), Path("y.jpg")]) == [
        "x",
        "x-2",
        "y",
    ]


def test_precheck_refuses_obvious_non_images_only(tmp_path):
    text = tmp_path / "foo.txt"
    text.write_text("hello")
    png = tmp_path / "ok.png"
    png.write_bytes(PNG_HEAD + b"\0" * 16)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")

    assert cli.precheck(png) is None
    assert cli.precheck(text).startswith(f"not an image: {text}")
    assert cli.precheck(empty) == f"cannot read {empty}: empty"
    assert (
        cli.precheck(tmp_path / "gone.jpg") == f"cannot read {tmp_path / 'gone.jpg'}: no such file"
    )


@pytest.mark.parametrize(
    "head, fmt",
    [
        (b"\xff\xd8\xff\xe0\0\x10JFIF", "JPEG"),
        (PNG_HEAD, "PNG"),
        (b"GIF89a", "GIF"),
        (b"RIFF\x24\0\0\0WEBPVP8 ", "WebP"),
        (b"RIFF\x24\0\0\0WAVEfmt ", None),
        (b"%PDF-1.7", None),
    ],
)
def test_sniff_image_format_by_magic_bytes(head, fmt):
    assert payload.sniff_image_format(head) == fmt


def test_load_image_reports_unreadable_files_before_sending(tmp_path):
    assert payload.load_image(b"raw") == b"raw"
    with pytest.raises(ImageNotReadable, match="no such file") as err:
        payload.load_image(tmp_path / "nope.jpg", index=4)
    assert err.value.index == 4
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageNotReadable, match="empty"):
        payload.load_image(tmp_path / "empty.png")


def test_url_comes_from_argument_then_environment_then_default(monkeypatch):
    monkeypatch.delenv(environment.URL_ENV, raising=False)
    assert connection.resolve_url() == environment.DEFAULT_URL == "localhost:8001"
    monkeypatch.setenv(environment.URL_ENV, "triton:9001")
    assert connection.resolve_url() == "triton:9001"
    assert connection.resolve_url("grpc://other:8001") == "other:8001"


# --- errors ----------------------------------------------------------------------


def test_unavailable_maps_to_server_unavailable_with_the_start_command():
    exc = server_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    err = errors.map_server_error(exc, url="localhost:8001")
    assert isinstance(err, ServerUnavailable)
    assert str(err) == (
        "Triton server at localhost:8001 is not reachable: is it running? "
        f"start it with `{errors.SERVE_COMMAND}`"
    )


def test_unknown_model_maps_to_model_not_ready():
    msg = "Request for unknown model: 'detect_onnxruntime' has no available versions"
    err = errors.map_server_error(
        server_error(grpc.StatusCode.NOT_FOUND, msg), url="h:1", model="detect_onnxruntime"
    )
    assert isinstance(err, ModelNotReady)
    assert str(err) == (
        f"model 'detect_onnxruntime' is not ready on the Triton server at h:1 (server said: {msg})"
    )


def test_invalid_argument_on_one_image_blames_that_image():
    exc = server_error(grpc.StatusCode.INVALID_ARGUMENT, "image 0: cannot decode")
    err = errors.map_server_error(exc, url="h:1", model=DETECT_ALL, source="foo.txt", index=3)
    assert isinstance(err, InvalidImage)
    assert (err.source, err.index, err.reason) == ("foo.txt", 3, "image 0: cannot decode")
    assert str(err) == "not an image: foo.txt (server said: image 0: cannot decode)"


def test_messages_stay_on_one_line_when_the_server_sends_a_traceback():
    reason = "Internal: RuntimeError: broken\n\nAt:\n  /models/x/1/model.py(1): <module>\n"
    for code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INTERNAL):
        err = errors.map_server_error(server_error(code, reason), url="h:1", model="x", source="a")
        assert "\n" not in str(err) and "RuntimeError: broken" in str(err)
    not_ready = errors.map_server_error(
        server_error(grpc.StatusCode.NOT_FOUND, reason), url="h:1", model="x"
    )
    assert not_ready.reason == reason  # the whole traceback is kept for logs


def test_invalid_argument_on_a_batch_does_not_blame_an_image():
    exc = server_error(grpc.StatusCode.INVALID_ARGUMENT, "image 5: cannot decode")
    err = errors.map_server_error(exc, url="h:1", model=DETECT_ALL)
    assert type(err) is InferenceFailed
    assert "image 5: cannot decode" in str(err)


@pytest.mark.parametrize(
    "code, words",
    [(grpc.StatusCode.INTERNAL, "failed"), (grpc.StatusCode.DEADLINE_EXCEEDED, "timed out")],
)
def test_other_statuses_map_to_inference_failed(code, words):
    err = errors.map_server_error(
        server_error(code, "boom"), url="h:1", model=DETECT_ALL, source="a"
    )
    assert type(err) is InferenceFailed
    assert words in str(err) and "boom" in str(err) and str(err).startswith("a: ")


def _fake_run(bad: set[int], calls: list[list[int]]):
    """A stand-in for one request: refuses the whole request if it holds a bad image."""

    def run(ids: list[int]) -> list[ImageResult]:
        calls.append(list(ids))
        if bad & set(ids):
            if len(ids) == 1:
                raise InvalidImage(f"img{ids[0]}", "cannot decode", ids[0])
            raise InferenceFailed("batch refused")
        return [ImageResult([], b"", source=f"img{i}") for i in ids]

    return run


def test_a_refused_batch_is_retried_image_by_image_to_find_the_bad_one():
    calls: list[list[int]] = []
    outcomes = run_isolating([0, 1, 2], _fake_run({1}, calls))

    assert calls == [[0, 1, 2], [0], [1], [2]]
    assert isinstance(outcomes[1], InvalidImage) and outcomes[1].index == 1
    assert [outcomes[i].source for i in (0, 2)] == ["img0", "img2"]


def test_a_good_batch_is_sent_once():
    calls: list[list[int]] = []
    outcomes = run_isolating([0, 1], _fake_run(set(), calls))
    assert calls == [[0, 1]] and len(outcomes) == 2


def test_a_server_going_away_during_the_retries_is_raised_not_blamed_on_images():
    calls: list[list[int]] = []

    def run(ids: list[int]) -> list[ImageResult]:
        calls.append(list(ids))
        if len(ids) > 1:
            raise InferenceFailed("batch refused")
        raise ServerUnavailable("h:1")

    with pytest.raises(ServerUnavailable):
        run_isolating([0, 1], run)
    assert calls == [[0, 1], [0]]


# --- no server (real sockets) ---------------------------------------------------------


def test_client_raises_server_unavailable_when_nothing_listens():
    url = f"127.0.0.1:{free_port()}"
    with DetectorClient(url) as client:
        assert client.is_ready() is False
        with pytest.raises(ServerUnavailable, match=f"Triton server at {url} is not reachable"):
            client.detect([PNG_HEAD])
        with pytest.raises(ServerUnavailable):
            client.ready_models()


def test_cli_exits_with_one_clear_line_when_no_server_listens(tmp_path):
    image = tmp_path / "astronaut.png"
    image.write_bytes(PNG_HEAD + b"\0" * 32)
    url = f"127.0.0.1:{free_port()}"
    out = tmp_path / "out"

    proc = subprocess.run(
        [sys.executable, "-m", "client", str(image), "--url", url, "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert proc.returncode == cli.EXIT_UNAVAILABLE
    assert proc.stderr.strip().splitlines() == [
        f"detect: Triton server at {url} is not reachable: is it running? "
        f"start it with `{errors.SERVE_COMMAND}`"
    ]
    assert proc.stdout == ""
    assert not out.exists()


def test_cli_skips_non_images_without_asking_the_server(tmp_path, capsys):
    notes = tmp_path / "foo.txt"
    notes.write_text("not an image")
    code = cli.main([str(notes), "--url", f"127.0.0.1:{free_port()}", "--out", str(tmp_path)])
    assert code == cli.EXIT_SKIPPED
    assert capsys.readouterr().err.startswith(f"not an image: {notes}")
