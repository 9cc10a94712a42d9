"""What an artifact says of its tensors (ensemble.artifacts): read without a framework,
then bound to a family's tensors, or refused for its native backend with the reason.
Against TensorFlow's own reading and the built artifacts: test_artifact_signatures_models.
"""

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

pytestmark = pytest.mark.unit


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


def test_an_onnx_graph_gives_its_own_names_dtypes_and_per_image_dims(tmp_path):
    sig = read_signature("onnx", onnx_file(tmp_path))
    assert sig.inputs == (ArtifactTensor("pixels", "FP32", (3, 64, 64)),)
    assert sig.outputs == (ArtifactTensor("dets", "FP32", (100, 6)),)
    assert sig.batch_open is True


def test_a_family_binds_an_artifact_of_other_names_by_position(tmp_path):
    binding = bind((IMAGES,), (BOXES,), read_signature("onnx", onnx_file(tmp_path)))
    assert binding.input.name == "pixels"
    assert binding.output("boxes").name == "dets"


def test_names_that_match_bind_by_name_whatever_their_order():
    sig = Signature(
        (ArtifactTensor("x", "FP32", None),),
        (ArtifactTensor("b", "FP32", None), ArtifactTensor("a", "FP32", None)),
    )
    a, b = NetworkTensor("a", "FP32", (1,)), NetworkTensor("b", "FP32", (1,))
    binding = bind((IMAGES,), (a, b), sig)
    assert [t.name for _, t in binding.outputs] == ["a", "b"]


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


def test_too_few_outputs_are_refused():
    sig = Signature((ArtifactTensor("x", "FP32", None),), (ArtifactTensor("y", "FP32", None),))
    two = (BOXES, NetworkTensor("count", "FP32", (1,)))
    with pytest.raises(ArtifactError, match="1 outputs \\(y\\), the family reads 2"):
        bind((IMAGES,), two, sig)


def test_a_torchscript_is_named_by_libtorchs_index_convention(tmp_path):
    sig = read_signature("torchscript", tmp_path / "never-read.pt", family_outputs=2)
    assert [t.name for t in sig.inputs] == ["INPUT__0"]
    assert [t.name for t in sig.outputs] == ["OUTPUT__0", "OUTPUT__1"]


def test_config_dims_keep_what_the_artifact_fixes_and_the_familys_elsewhere():
    yolo = NetworkTensor("output0", "FP32", (7, -1))
    assert config_dims(yolo, ArtifactTensor("o", "FP32", (7, 2100))) == (7, 2100)
    ssd_in = NetworkTensor("image_tensor", "UINT8", (300, 300, 3))
    assert config_dims(ssd_in, ArtifactTensor("i", "UINT8", (-1, -1, 3))) == (300, 300, 3)
    assert config_dims(yolo, ArtifactTensor("o", "FP32", None)) == (7, -1)


def test_unreadable_artifacts_say_so(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(ArtifactError, match="not a readable ONNX file"):
        read_signature("onnx", tmp_path / "bad.onnx")
    (tmp_path / "sm").mkdir()
    with pytest.raises(ArtifactError, match="cannot read"):
        read_signature("savedmodel", tmp_path / "sm")
