"""The web demo's `/detect` API, in-process, against the real server (default models file).

What the page should call each model is asked of the same server through the project's
client (its ensembles' configs); the default models file's captions are spelled out once.
"""

from __future__ import annotations

import base64
import os

import pytest

from client import DetectorClient
from ensemble.processes import free_port
from ui import app as ui_app
from ui import timings
from ui.catalog import ServerModels, detector_captions

# The captions of models.toml's detectors: runtime, then title, as the configs say them.
PYTORCH = "PyTorch (TorchScript) · NanoDet-m 416"
TENSORFLOW = "TensorFlow (SavedModel) · SSD MobileNet v2 (COCO)"
ONNXRUNTIME = "ONNX Runtime · CenterNet MobileNetV3 512"

pytestmark = [
    pytest.mark.server,
    # Gradio's queue summarises its events with pandas calls that pandas 3 deprecates.
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),
]

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def ui_url(triton_url, tmp_path_factory):
    """URL of the demo page, launched in this process on a free port, on the test server."""
    # Gradio reads its upload folder from the environment: keep this app's files apart.
    saved = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio"))
    client = DetectorClient(triton_url)
    demo = ui_app.build_app(client)
    try:
        demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True)
        yield demo.local_url
    finally:
        demo.close()
        client.close()
        if saved is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = saved


@pytest.fixture(scope="module")
def served(triton_url):
    """What the server says of each of its ensembles (``ModelInfo`` by name)."""
    with DetectorClient(triton_url) as client:
        return {name: client.model_info(name) for name in client.ensembles()}


@pytest.fixture(scope="module")
def page(ui_url):
    return gradio_client.Client(ui_url, verbose=False)


def detect(page, path, model="detect_all", score=0.3, iou=0.5):
    gallery, table, steps, message = page.predict(
        gradio_client.handle_file(str(path)), model, score, iou, api_name="/detect"
    )
    return gallery, table["data"], steps["data"], message


def test_detect_all_finds_the_astronaut_with_a_box_in_pixels(page, photos_dir):
    gallery, rows, _, message = detect(page, photos_dir / "astronaut.png")
    fused = [r for r in rows if r[0] == "Fused (WBF)"]
    person = next(r for r in fused if r[1] == "person")
    x1, y1, x2, y2 = person[3:]
    # astronaut.png is 512x512 and she fills most of its height: pixels, not 0..1.
    assert 0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 512
    assert y2 - y1 > 300
    assert person[2] >= 0.3
    assert message.startswith("1 object after fusion: person")
    assert {r[0] for r in rows} >= {"Fused (WBF)", TENSORFLOW}


def test_gallery_has_the_fused_image_then_each_fused_detectors_for_detect_all(
    page, photos_dir, served
):
    gallery, *_ = detect(page, photos_dir / "horse.png")
    captions = [item["caption"] for item in gallery]
    assert captions == ["Fused (WBF)", PYTORCH, TENSORFLOW, ONNXRUNTIME]
    # ...which is what the server's detect_all config names, in its order.
    fused = served["detect_all"].detectors
    assert captions[1:] == [detector_captions(fused)[d.name] for d in fused]
    head, _, data = gallery[0]["image"]["url"].partition(",")
    assert head == "data:image/jpeg;base64"
    assert base64.b64decode(data).startswith(b"\xff\xd8")  # the server's JPEG


def test_one_detector_gives_one_image_and_only_its_rows(page, photos_dir):
    gallery, rows, _, _ = detect(page, photos_dir / "coffee.png", "detect_tensorflow")
    assert [item["caption"] for item in gallery] == [TENSORFLOW]
    assert rows[0][:2] == [TENSORFLOW, "cup"]
    assert {r[0] for r in rows} == {TENSORFLOW}


def test_a_higher_score_threshold_gives_fewer_rows(page, photos_dir):
    _, low, _, _ = detect(page, photos_dir / "chelsea.png", score=0.2)
    _, high, _, _ = detect(page, photos_dir / "chelsea.png", score=0.7)
    assert len(low) > len(high) >= 1
    assert min(r[2] for r in high) >= 0.7


def test_a_non_image_file_gets_the_servers_message_and_the_page_keeps_working(
    page, photos_dir, tmp_path
):
    notes = tmp_path / "notes.txt"
    notes.write_text("just some text")
    gallery, rows, steps, message = detect(page, notes)
    assert message.startswith("**Error:** not an image: notes.txt (server said:")
    assert "Traceback" not in message
    assert gallery == [] and rows == [] and steps == []
    _, rows, _, message = detect(page, photos_dir / "motorcycle_left.png")
    assert rows[0][1] == "motorcycle" and not message.startswith("**Error:**")


def test_no_image_gives_a_message(page):
    *_, message = page.predict(None, "detect_all", 0.3, 0.5, api_name="/detect")
    assert message.startswith("**Error:** no image given")


def test_a_model_the_server_does_not_serve_is_refused_naming_what_it_serves(
    page, photos_dir, served
):
    _, rows, _, message = detect(page, photos_dir / "coffee.png", "detect_yolo")
    # In the model choice's order: detect_all, then its detectors as the models file lists them.
    assert message == (
        "**Error:** unknown model 'detect_yolo': this server serves "
        "detect_all, detect_pytorch, detect_tensorflow, detect_onnxruntime"
    )
    assert set(served) == {
        "detect_all",
        "detect_pytorch",
        "detect_tensorflow",
        "detect_onnxruntime",
    }
    assert rows == []


@pytest.mark.parametrize(
    ("model", "first_step", "last_step"),
    [("detect_all", "image_decode", "fuse_detections"),
     ("detect_pytorch", "preprocess_pytorch", "postprocess_pytorch")],
)  # fmt: skip
def test_timings_have_the_round_trip_and_each_step_of_the_ensembles_config(
    page, photos_dir, served, model, first_step, last_step
):
    _, _, steps, _ = detect(page, photos_dir / "coffee.png", model)
    labels = [label for label, _ in steps]
    assert labels == [
        "round trip (client)",
        f"server total ({model})",
        *(s.label for s in timings.ensemble_steps(served[model].steps)),
    ]
    assert labels[2] == first_step and labels[-1] == last_step
    assert all(ms is not None and ms > 0 for _, ms in steps), steps
    round_trip, server_total = steps[0][1], steps[1][1]
    assert server_total <= round_trip * 1.05  # the server's share fits in the round trip


def test_status_line_lists_the_ready_ensembles_in_the_model_choices_order(triton_url):
    with DetectorClient(triton_url) as client:
        text = ui_app.StatusLine(client, models=ServerModels(client))()
    assert text.startswith(
        "**Server: up** · ready: detect_all, detect_pytorch, detect_tensorflow, detect_onnxruntime"
    )
