"""What an artifact says of its tensors (ensemble.artifacts): read without a framework,
then bound to a family's tensors, or refused for its native backend with the reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ensemble.artifacts import (
    ArtifactError,
    ArtifactTensor,
    Signature,
    bind,
    config_dims,
    read_signature,
)
from ensemble.families import NetworkTensor

IMAGES = NetworkTensor("images", "FP32", (3, 64, 64))
BOXES = NetworkTensor("boxes", "FP32", (100, 6))


def onnx_file(folder: Path, batch="batch", inputs=("pixels",), outputs=("dets",),
              elem=1) -> Path:  # fmt: skip
    """A one-node ONNX graph (an Identity per output of the first input)."""
    import onnx
    from onnx import helper

    ins = [helper.make_tensor_value_info(n, elem, [batch, 3, 64, 64]) for n in inputs]
    outs = [helper.make_tensor_value_info(n, elem, [batch, 100, 6]) for n in outputs]
    nodes = [helper.make_node("Identity", [inputs[0]], [n]) for n in outputs]
    graph = helper.make_graph(nodes, "g", ins, outs)
    path = folder / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.mark.unit
def test_an_onnx_graph_gives_its_own_names_dtypes_and_per_image_dims(tmp_path):
    sig = read_signature("onnx", onnx_file(tmp_path))
    assert sig.inputs == (ArtifactTensor("pixels", "FP32", (3, 64, 64)),)
    assert sig.outputs == (ArtifactTensor("dets", "FP32", (100, 6)),)
    assert sig.batch_open is True


@pytest.mark.unit
def test_a_family_binds_an_artifact_of_other_names_by_position(tmp_path):
    binding = bind((IMAGES,), (BOXES,), read_signature("onnx", onnx_file(tmp_path)))
    assert binding.input.name == "pixels"
    assert binding.output("boxes").name == "dets"


@pytest.mark.unit
def test_names_that_match_bind_by_name_whatever_their_order():
    sig = Signature(
        (ArtifactTensor("x", "FP32", None),),
        (ArtifactTensor("b", "FP32", None), ArtifactTensor("a", "FP32", None)),
    )
    a, b = NetworkTensor("a", "FP32", (1,)), NetworkTensor("b", "FP32", (1,))
    binding = bind((IMAGES,), (a, b), sig)
    assert [t.name for _, t in binding.outputs] == ["a", "b"]


@pytest.mark.unit
@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"batch": 1}, "fixes the batch size"),
        ({"inputs": ("a", "b")}, "takes 2 inputs (a, b)"),
        ({"elem": 10}, "its input 'pixels' is FP16, the family's 'images' is FP32"),
    ],
)
def test_an_artifact_its_native_backend_cannot_take_is_refused_with_the_reason(
    tmp_path, kwargs, reason
):
    with pytest.raises(ArtifactError, match=re.escape(reason)):
        bind((IMAGES,), (BOXES,), read_signature("onnx", onnx_file(tmp_path, **kwargs)))


@pytest.mark.unit
def test_too_few_outputs_are_refused():
    sig = Signature((ArtifactTensor("x", "FP32", None),), (ArtifactTensor("y", "FP32", None),))
    two = (BOXES, NetworkTensor("count", "FP32", (1,)))
    with pytest.raises(ArtifactError, match="1 outputs \\(y\\), the family reads 2"):
        bind((IMAGES,), two, sig)


@pytest.mark.unit
def test_a_torchscript_is_named_by_libtorchs_index_convention(tmp_path):
    sig = read_signature("torchscript", tmp_path / "never-read.pt", family_outputs=2)
    assert [t.name for t in sig.inputs] == ["INPUT__0"]
    assert [t.name for t in sig.outputs] == ["OUTPUT__0", "OUTPUT__1"]


@pytest.mark.unit
def test_config_dims_keep_what_the_artifact_fixes_and_the_familys_elsewhere():
    yolo = NetworkTensor("output0", "FP32", (7, -1))
    assert config_dims(yolo, ArtifactTensor("o", "FP32", (7, 2100))) == (7, 2100)
    ssd_in = NetworkTensor("image_tensor", "UINT8", (300, 300, 3))
    assert config_dims(ssd_in, ArtifactTensor("i", "UINT8", (-1, -1, 3))) == (300, 300, 3)
    assert config_dims(yolo, ArtifactTensor("o", "FP32", None)) == (7, -1)


@pytest.mark.unit
def test_unreadable_artifacts_say_so(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(ArtifactError, match="not a readable ONNX file"):
        read_signature("onnx", tmp_path / "bad.onnx")
    (tmp_path / "sm").mkdir()
    with pytest.raises(ArtifactError, match="cannot read"):
        read_signature("savedmodel", tmp_path / "sm")


@pytest.mark.models
def test_a_savedmodels_signature_reads_as_tensorflow_itself_reads_it(tmp_path):
    """A SavedModel of a signature of its own (names, dtypes, shapes unlike SSD's),
    read from saved_model.pb without TensorFlow, against TensorFlow's own loading."""
    import tensorflow as tf

    class Odd(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 64, 64, 3], tf.uint8, name="px")])
        def serve(self, px):
            x = tf.cast(px, tf.float32)
            return {
                "zeta": tf.reduce_mean(x, axis=[1, 2]),
                "alpha": tf.zeros([tf.shape(x)[0], 5, 4]),
            }

    path = tmp_path / "odd.savedmodel"
    module = Odd()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    sig = read_signature("savedmodel", path)
    loaded = tf.saved_model.load(str(path)).signatures["serving_default"]
    _, keywords = loaded.structured_input_signature
    assert [t.name for t in sig.inputs] == list(keywords) == ["px"]
    assert sig.inputs[0].dtype == "UINT8" and sig.inputs[0].dims == (64, 64, 3)
    # A signature's outputs are a map: TensorFlow's own dict order varies between
    # loads, so the reader gives them in key order, as the SavedModel stores them.
    assert [t.name for t in sig.outputs] == sorted(loaded.structured_outputs) == ["alpha", "zeta"]
    tf_dims = {k: tuple(v.shape[1:]) for k, v in loaded.structured_outputs.items()}
    assert {t.name: t.dims for t in sig.outputs} == tf_dims == {"alpha": (5, 4), "zeta": (3,)}
    assert sig.batch_open is True


@pytest.mark.models
def test_the_bundled_artifacts_carry_their_familys_own_tensor_names():
    """The registry binds a recipe before it is built, with the family's names: the
    built artifacts must say the same."""
    from ensemble.recipes import artifact_path
    from ensemble.registry import load_models

    for d in load_models().detectors:
        if d.recipe is None or d.runtime_info.native_platform is None:
            continue
        sig = read_signature(d.runtime, artifact_path(d.recipe), len(d.outputs))
        binding = bind(d.inputs, d.outputs, sig)
        assert binding.input.name == d.inputs[0].name, d.name
        assert [t.name for _, t in binding.outputs] == [t.name for t in d.outputs], d.name
