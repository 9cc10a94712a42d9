"""Each converted detector computes what the runtime it was converted from computes.

The artifacts written by ``python -m ensemble.recipes`` are run next to their reference
forms (``<models>/reference/``: the TF.js graphs as GraphDefs and SSD's TF1 frozen
graph, all run by ``tf.compat.v1.Session``) on real photos, pre-processed the way the
reference code does: stretched to the network's size by TF.js ``resizeBilinear``
(TF's legacy bilinear resize, ``half_pixel_centers=False``). Tolerances are stated
per test; each is at least ten times the largest difference measured (float32
reordering) and far below anything a wrong weight, layout or decoder would give.

The artifacts are named by their build recipe (``ensemble.recipes.RECIPES``); their
tensors are what the family the default ``models.toml`` serves each recipe with says
(built-in families with the COCO-80 labels). Missing artifacts fail (not skip) with the
command that builds them.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import skimage.data
from PIL import Image

from ensemble import contract, recipes
from ensemble.families import builtin_families

pytestmark = pytest.mark.models

# The bundled recipes and the families that pre- and post-process their artifacts.
NANODET_RECIPE, SSD_RECIPE, CENTERNET_RECIPE = (
    "nanodet_m",
    "ssd_mobilenet_v2",
    "centernet_mobilenetv3",
)
RECIPE_FAMILIES = {NANODET_RECIPE: "nanodet", SSD_RECIPE: "ssd", CENTERNET_RECIPE: "centernet"}
_FAMILIES = builtin_families()
# Each family with its default options and the COCO-80 labels, as models.toml serves it.
TESTED = {r: _FAMILIES[f](None, contract.COCO80_LABELS) for r, f in RECIPE_FAMILIES.items()}
NANODET, SSD, CENTERNET = (TESTED[r] for r in (NANODET_RECIPE, SSD_RECIPE, CENTERNET_RECIPE))

PHOTOS_DIR = pathlib.Path(skimage.data.__file__).parent
PHOTOS = ("astronaut", "coffee", "horse", "motorcycle_left")
BUILD_HINT = "run `python -m ensemble.recipes`"

# NanoDet's TF.js outputs per stride 8, 16, 32 as (class scores [1, n, 80], box
# distributions [1, n, 44]); names from the signature in models/nanodet.json.
NANODET_TFJS_OUTPUTS = (
    ("Identity:0", "Identity_3:0"),
    ("Identity_1:0", "Identity_4:0"),
    ("Identity_2:0", "Identity_5:0"),
)
NANODET_TFJS_INPUT = "input_1:0"
CENTERNET_TFJS_INPUT = "tower_0/images:0"
CENTERNET_TFJS_OUTPUT = "tower_0/detections:0"
SSD_OUTPUTS = tuple(t.name for t in SSD.outputs)


def _require(path: pathlib.Path) -> pathlib.Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: {BUILD_HINT}", pytrace=False)
    return path


def _coco80(name: str) -> int:
    return contract.COCO80_LABELS.index(name)


def _coco91(name: str) -> int:
    return contract.COCO91_IDS[_coco80(name)]


# --- inputs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resized():
    """``resized(size)`` -> {photo: float32 [size, size, 3] RGB 0..255}, as TF.js resizes."""
    import tensorflow as tf

    images = {n: np.asarray(Image.open(PHOTOS_DIR / f"{n}.png").convert("RGB")) for n in PHOTOS}
    cache: dict[int, dict[str, np.ndarray]] = {}

    def resize(size: int) -> dict[str, np.ndarray]:
        if size not in cache:
            cache[size] = {
                name: tf.compat.v1.image.resize_bilinear(
                    image[None].astype(np.float32), [size, size], half_pixel_centers=False
                )[0].numpy()
                for name, image in images.items()
            }
        return cache[size]

    return resize


@pytest.fixture(scope="module")
def nanodet_inputs(resized) -> dict[str, np.ndarray]:
    """[1, 3, 416, 416] float32 RGB / 255 per photo."""
    return {n: (x / 255.0).transpose(2, 0, 1)[None] for n, x in resized(416).items()}


@pytest.fixture(scope="module")
def centernet_inputs(resized) -> dict[str, np.ndarray]:
    """[1, 512, 512, 3] float32 RGB 0..255 per photo."""
    return {n: x[None] for n, x in resized(512).items()}


@pytest.fixture(scope="module")
def ssd_inputs(resized) -> dict[str, np.ndarray]:
    """[1, 300, 300, 3] uint8 RGB per photo."""
    return {n: np.clip(np.round(x), 0, 255).astype(np.uint8)[None] for n, x in resized(300).items()}


# --- reference runtimes --------------------------------------------------------------


class GraphSession:
    """A GraphDef from ``<models>/reference`` in a TF1 session, as its source runs it."""

    def __init__(self, path: pathlib.Path):
        import tensorflow as tf

        graph_def = tf.compat.v1.GraphDef.FromString(_require(path).read_bytes())
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        self.session = tf.compat.v1.Session(graph=self.graph)

    def __call__(self, feeds: dict, fetches):
        return self.session.run(fetches, feeds)


@pytest.fixture(scope="module")
def nanodet_reference(nanodet_inputs) -> dict[str, np.ndarray]:
    """Per photo, the TF.js graph's six outputs laid out as ``OUTPUT__0`` [3549, 124]."""
    session = GraphSession(recipes.reference_path(NANODET_RECIPE))
    out = {}
    for name, x in nanodet_inputs.items():
        heads = session({NANODET_TFJS_INPUT: x}, NANODET_TFJS_OUTPUTS)
        out[name] = np.concatenate([np.concatenate(h, axis=2)[0] for h in heads])
    session.session.close()
    return out


@pytest.fixture(scope="module")
def centernet_reference(centernet_inputs) -> dict[str, np.ndarray]:
    session = GraphSession(recipes.reference_path(CENTERNET_RECIPE))
    out = {
        n: session({CENTERNET_TFJS_INPUT: x}, CENTERNET_TFJS_OUTPUT)[0]
        for n, x in centernet_inputs.items()
    }
    session.session.close()
    return out


@pytest.fixture(scope="module")
def ssd_reference(ssd_inputs) -> dict[str, dict[str, np.ndarray]]:
    session = GraphSession(recipes.reference_path(SSD_RECIPE))
    fetches = {k: f"{k}:0" for k in SSD_OUTPUTS}
    out = {
        n: {k: v[0] for k, v in session({"image_tensor:0": x}, fetches).items()}
        for n, x in ssd_inputs.items()
    }
    session.session.close()
    return out


# --- artifacts -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def nanodet_module():
    import torch

    # map_location="cpu" is how a CPU-only host loads it; a traced device would show here.
    return torch.jit.load(
        str(_require(recipes.artifact_path(NANODET_RECIPE))), map_location="cpu"
    ).eval()


def _run_nanodet(module, batch: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return module(torch.from_numpy(np.ascontiguousarray(batch, np.float32))).numpy()


@pytest.fixture(scope="module")
def centernet_session():
    import onnxruntime as ort

    return ort.InferenceSession(
        str(_require(recipes.artifact_path(CENTERNET_RECIPE))), providers=["CPUExecutionProvider"]
    )


def _run_centernet(session, batch: np.ndarray) -> np.ndarray:
    (out,) = session.run(["detections"], {"images": batch.astype(np.float32)})
    return out


@pytest.fixture(scope="module")
def ssd_signature():
    import tensorflow as tf

    loaded = tf.saved_model.load(str(_require(recipes.artifact_path(SSD_RECIPE))))
    signature = loaded.signatures["serving_default"]
    signature.loaded = loaded  # the signature holds only a weak reference to its object
    return signature


def _run_ssd(signature, batch: np.ndarray) -> dict[str, np.ndarray]:
    import tensorflow as tf

    return {k: v.numpy() for k, v in signature(image_tensor=tf.constant(batch)).items()}


# --- manifest ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest() -> dict:
    manifest = recipes.load_manifest()
    if not manifest.get("models"):
        pytest.fail(f"{recipes.manifest_path()} is missing or empty: {BUILD_HINT}", pytrace=False)
    return manifest


def test_every_recipe_is_tested_here():
    assert set(RECIPE_FAMILIES) == set(recipes.RECIPES)


def test_default_models_file_serves_each_recipe_with_the_family_tested_here():
    from ensemble.registry import load_models

    served = {d.recipe: d for d in load_models().detectors if d.recipe}
    assert set(served) == set(recipes.RECIPES)
    for recipe, detector in served.items():
        tested = TESTED[recipe]
        assert detector.family_ref == RECIPE_FAMILIES[recipe], recipe
        assert detector.runtime == recipes.RECIPES[recipe][1], recipe
        assert (detector.inputs, detector.outputs) == (tested.inputs, tested.outputs), recipe
        assert detector.artifact_path() == recipes.artifact_path(recipe)


@pytest.mark.parametrize("recipe", list(recipes.RECIPES))
def test_manifest_output_hashes_match_the_files(manifest, recipe):
    from ensemble.recipes.sources import sha256_file
    from ensemble.registry import RUNTIMES

    entry = manifest["models"].get(recipe)
    assert entry, f"{recipe} not in the manifest: {BUILD_HINT}"
    root = recipes.models_dir()
    artifact = recipes.artifact_path(recipe).relative_to(root).as_posix()
    assert entry["artifact"] == artifact
    assert entry["runtime"] == recipes.RECIPES[recipe][1]
    # The artifact carries the name its runtime links it under in a model's version folder.
    assert RUNTIMES[entry["runtime"]].link_name == recipes.artifact_path(recipe).name
    assert entry["reference"] == recipes.reference_path(recipe).relative_to(root).as_posix()
    assert any(rel == artifact or rel.startswith(artifact + "/") for rel in entry["outputs"])
    assert entry["reference"] in entry["outputs"]
    for rel, sha in entry["outputs"].items():
        assert sha256_file(_require(root / rel)) == sha, f"{rel} changed since it was built"


@pytest.mark.parametrize("recipe", list(recipes.RECIPES))
def test_manifest_names_the_pinned_source_package_and_members(manifest, recipe):
    import importlib

    from ensemble.recipes import pipeline, sources

    (pinned,) = [r for r in pipeline.RECIPES if r.name == recipe]
    entry = manifest["models"][recipe]
    source = entry["source"]
    assert source == sources.describe(pinned.package)
    assert source["registry"] in ("npm", "pypi")
    assert entry["inputs"][source["archive"]] == source["sha256"] == pinned.package.sha256
    members = importlib.import_module(f"ensemble.recipes.{pinned.converter}").MEMBERS
    assert members and all(m in entry["inputs"] for m in members), entry["inputs"]


def test_built_artifacts_are_current_with_the_build_code(manifest):
    from ensemble.recipes import pipeline

    code = pipeline.code_sha256()
    for recipe in pipeline.RECIPES:
        key = pipeline.cache_key(recipe, code, pipeline.tool_versions(recipe.tools))
        assert manifest["models"][recipe.name]["cache_key"] == key, (
            f"{recipe.name} was built by other code or tools: {BUILD_HINT}"
        )


def test_a_changed_output_file_is_not_reused(tmp_path):
    from ensemble.recipes import pipeline
    from ensemble.recipes.sources import sha256_file

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.onnx").write_bytes(b"built")
    entry = {
        "cache_key": "k",
        "artifact": "m/model.onnx",
        "outputs": {"m/model.onnx": sha256_file(tmp_path / "m" / "model.onnx")},
    }
    assert pipeline.stale_reason(entry, "k", tmp_path) is None
    assert "cache key" in pipeline.stale_reason(entry, "other", tmp_path)
    (tmp_path / "m" / "model.onnx").write_bytes(b"edited")
    assert "sha256" in pipeline.stale_reason(entry, "k", tmp_path)


# --- NanoDet: TorchScript vs the TF.js graph ---------------------------------------------


def test_nanodet_torchscript_matches_tfjs_graph(nanodet_module, nanodet_inputs, nanodet_reference):
    for name, x in nanodet_inputs.items():
        got = _run_nanodet(nanodet_module, x)[0]
        want = nanodet_reference[name]
        assert got.shape == want.shape == NANODET.outputs[0].dims
        # Scores are sigmoid outputs in 0..1; distributions are logits of magnitude < 15.
        np.testing.assert_allclose(got[:, :80], want[:, :80], atol=1e-4, err_msg=name)
        np.testing.assert_allclose(got[:, 80:], want[:, 80:], atol=1e-3, err_msg=name)


def test_nanodet_batch_of_two_equals_two_single_images(nanodet_module, nanodet_inputs):
    a, b = nanodet_inputs["astronaut"], nanodet_inputs["horse"]
    batch = _run_nanodet(nanodet_module, np.concatenate([a, b]))
    singles = np.concatenate([_run_nanodet(nanodet_module, a), _run_nanodet(nanodet_module, b)])
    np.testing.assert_allclose(batch, singles, atol=1e-5)


def test_nanodet_trace_pins_no_device(nanodet_module):
    devices = [
        str(node)
        for node in nanodet_module.inlined_graph.nodes()
        if node.kind() == "prim::Constant" and node.output().type().kind() == "DeviceObjType"
    ]
    assert devices == []


def test_nanodet_runs_where_it_is_loaded_without_reading_back_tensors():
    import torch

    # The meta device has no data: any weight left behind, any tensor made on a fixed
    # device or any shape read back to the host (a GPU sync) fails here.
    module = torch.jit.load(
        str(_require(recipes.artifact_path(NANODET_RECIPE))), map_location="meta"
    )
    with torch.inference_mode():
        out = module(torch.zeros([2, *NANODET.inputs[0].dims], device="meta"))
    assert out.device.type == "meta" and tuple(out.shape) == (2, *NANODET.outputs[0].dims)


def test_nanodet_scores_the_astronaut_as_a_person(nanodet_module, nanodet_inputs):
    scores = _run_nanodet(nanodet_module, nanodet_inputs["astronaut"])[0, :, :80]
    best_anchor, best_class = np.unravel_index(np.argmax(scores), scores.shape)
    assert best_class == _coco80("person")
    assert scores[best_anchor, best_class] > 0.5


# --- SSD: SavedModel vs the frozen graph -------------------------------------------------


def test_ssd_savedmodel_matches_frozen_graph(ssd_signature, ssd_inputs, ssd_reference):
    for name, x in ssd_inputs.items():
        got = {k: v[0] for k, v in _run_ssd(ssd_signature, x).items()}
        want = ssd_reference[name]
        # Same graph, same kernels: only float reassociation may differ.
        np.testing.assert_allclose(got["detection_boxes"], want["detection_boxes"], atol=1e-5)
        np.testing.assert_allclose(got["detection_scores"], want["detection_scores"], atol=1e-5)
        np.testing.assert_array_equal(got["detection_classes"], want["detection_classes"])
        np.testing.assert_array_equal(got["num_detections"], [want["num_detections"]])


def test_ssd_batch_of_two_equals_two_single_images(ssd_signature, ssd_inputs):
    a, b = ssd_inputs["astronaut"], ssd_inputs["coffee"]
    batch = _run_ssd(ssd_signature, np.concatenate([a, b]))
    singles = [_run_ssd(ssd_signature, a), _run_ssd(ssd_signature, b)]
    for key in SSD_OUTPUTS:
        np.testing.assert_allclose(
            batch[key], np.concatenate([s[key] for s in singles]), atol=1e-5, err_msg=key
        )


def test_ssd_signature_has_the_documented_tensors(ssd_signature):
    import tensorflow as tf

    (image,) = ssd_signature.structured_input_signature[1].values()
    assert image.name == SSD.inputs[0].name and image.dtype == tf.uint8
    assert image.shape.as_list() == [None, None, None, 3]
    outputs = ssd_signature.structured_outputs
    assert set(outputs) == set(SSD_OUTPUTS)
    for spec in SSD.outputs:  # Triton needs static per-image dims, num_detections as [1]
        assert outputs[spec.name].dtype == tf.float32
        assert outputs[spec.name].shape.as_list() == [None, *spec.dims], spec.name


@pytest.mark.parametrize(
    ("photo", "label"),
    [
        ("astronaut", "person"),
        ("coffee", "cup"),
        ("horse", "horse"),
        ("motorcycle_left", "motorcycle"),
    ],
)
def test_ssd_savedmodel_finds_the_photographed_object(ssd_signature, ssd_inputs, photo, label):
    out = _run_ssd(ssd_signature, ssd_inputs[photo])
    classes, scores = out["detection_classes"][0], out["detection_scores"][0]
    assert scores[classes == _coco91(label)].max(initial=0.0) > 0.5


# --- CenterNet: ONNX vs the TF.js graph --------------------------------------------------


def test_centernet_onnx_matches_tfjs_graph(
    centernet_session, centernet_inputs, centernet_reference
):
    for name, x in centernet_inputs.items():
        got = _run_centernet(centernet_session, x)[0]
        want = centernet_reference[name]
        assert got.shape == want.shape == CENTERNET.outputs[0].dims
        # Top-100 in the same order: boxes in input pixels (0..512), scores 0..1.
        np.testing.assert_allclose(got[:, :4], want[:, :4], atol=1e-2, err_msg=name)
        np.testing.assert_allclose(got[:, 4], want[:, 4], atol=1e-4, err_msg=name)
        np.testing.assert_array_equal(got[:, 5], want[:, 5], err_msg=name)


def test_centernet_batch_of_two_equals_two_single_images(centernet_session, centernet_inputs):
    a, b = centernet_inputs["astronaut"], centernet_inputs["motorcycle_left"]
    batch = _run_centernet(centernet_session, np.concatenate([a, b]))
    singles = np.concatenate(
        [_run_centernet(centernet_session, a), _run_centernet(centernet_session, b)]
    )
    np.testing.assert_allclose(batch, singles, atol=1e-4)


def test_centernet_onnx_has_the_documented_tensors(centernet_session, manifest):
    (inp,) = centernet_session.get_inputs()
    (out,) = centernet_session.get_outputs()
    assert (inp.name, inp.type) == (CENTERNET.inputs[0].name, "tensor(float)")
    assert (out.name, out.type) == (CENTERNET.outputs[0].name, "tensor(float)")
    assert tuple(inp.shape[1:]) == CENTERNET.inputs[0].dims
    assert tuple(out.shape[1:]) == CENTERNET.outputs[0].dims
    batch_is_free = isinstance(inp.shape[0], str) or inp.shape[0] is None
    assert batch_is_free == (manifest["models"][CENTERNET_RECIPE]["batch"] == "dynamic")


@pytest.mark.parametrize(
    ("photo", "label"),
    [
        ("astronaut", "person"),
        ("coffee", "cup"),
        ("horse", "horse"),
        ("motorcycle_left", "motorcycle"),
    ],
)
def test_centernet_onnx_finds_the_photographed_object(
    centernet_session, centernet_inputs, photo, label
):
    detections = _run_centernet(centernet_session, centernet_inputs[photo])[0]
    scores = detections[detections[:, 5] == _coco80(label), 4]
    assert scores.max(initial=0.0) > 0.3
