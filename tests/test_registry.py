"""The models file: what it registers, and every way a broken one is refused before
Triton starts, with one line naming the file, the entry and the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from ensemble import contract
from ensemble.families.centernet import CenterNet
from ensemble.families.yolo import YOLO
from ensemble.registry import DEFAULT_MODELS_FILE, ModelsFileError, load_models

pytestmark = pytest.mark.unit


def write(folder: Path, text: str, name: str = "models.toml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def onnx_model(path: Path, output_dims: list[int | str]) -> Path:
    """A tiny real ONNX file whose only output has ``output_dims`` (batch first)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["output0"])],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, output_dims)],
    )
    onnx.save(helper.make_model(graph), path)
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    (tmp_path / "model.onnx").write_bytes(b"not read unless it is a real ONNX file")
    (tmp_path / "parts.txt").write_text("bolt\nnut\n\nwasher\n")
    return tmp_path


def refused(path: Path) -> str:
    with pytest.raises(ModelsFileError) as e:
        load_models(path)
    message = str(e.value)
    assert "\n" not in message, "the refusal must be one line"
    return message


def test_the_committed_models_file_registers_the_three_bundled_detectors():
    registry = load_models(DEFAULT_MODELS_FILE)
    assert [d.name for d in registry.detectors] == ["pytorch", "tensorflow", "onnxruntime"]
    assert [d.runtime for d in registry.detectors] == ["torchscript", "savedmodel", "onnx"]
    assert registry.ensembles == (
        "detect_pytorch", "detect_tensorflow", "detect_onnxruntime", contract.DETECT_ALL,
    )  # fmt: skip
    assert registry.fused_labels() == contract.COCO80_LABELS
    assert all(d.recipe and d.artifact is None for d in registry.detectors)


def test_an_artifact_path_is_relative_to_the_models_file_not_the_working_directory(
    folder, monkeypatch
):
    path = write(
        folder,
        """
        [[detector]]
        name = "parts"
        title = "Parts"
        runtime = "onnx"
        artifact = "model.onnx"
        family = "centernet"
        labels = "parts.txt"
    """,
    )
    monkeypatch.chdir("/")
    (parts,) = load_models(path).detectors
    assert parts.artifact == (folder / "model.onnx").resolve()
    assert parts.labels == ("bolt", "nut", "washer")  # blank lines ignored
    assert parts.ensemble == "detect_parts" and parts.title == "Parts"
    assert isinstance(parts.family, CenterNet) and parts.family.num_classes == 3


def test_defaults_coco_labels_fused_and_the_family_defaults(folder):
    (d,) = load_models(
        write(
            folder,
            """
        [[detector]]
        name = "a"
        runtime = "onnx"
        artifact = "model.onnx"
        family = "yolo"
    """,
        )
    ).detectors
    assert d.labels == contract.COCO80_LABELS and d.fuse and d.title == "a"
    assert d.family.options.input_size == 640
    assert d.outputs[0].dims == (84, -1)


def test_family_options_come_from_the_entry(folder):
    (d,) = load_models(
        write(
            folder,
            """
        [[detector]]
        name = "a"
        runtime = "onnx"
        artifact = "model.onnx"
        family = "yolo"
        labels = "parts.txt"
        input_size = 320
        fuse = false
        instances = 3
        preferred_batch_sizes = [2, 4]
    """,
        )
    ).detectors
    assert d.inputs[0].dims == (3, 320, 320)
    assert d.outputs[0].dims == (4 + 3, -1)
    assert not d.fuse and d.instances == 3 and d.preferred_batch_sizes == (2, 4)


def test_detect_all_carries_only_the_fused_detectors_and_the_union_of_their_labels(folder):
    (folder / "animals.txt").write_text("cat\ndog\n")
    (folder / "pets.txt").write_text("dog\nhamster\n")
    registry = load_models(
        write(
            folder,
            """
        [[detector]]
        name = "a"
        runtime = "onnx"
        artifact = "model.onnx"
        family = "centernet"
        labels = "animals.txt"

        [[detector]]
        name = "b"
        runtime = "onnx"
        artifact = "model.onnx"
        family = "centernet"
        labels = "pets.txt"

        [[detector]]
        name = "c"
        runtime = "onnx"
        artifact = "model.onnx"
        family = "centernet"
        fuse = false
    """,
        )
    )
    assert [d.name for d in registry.fused] == ["a", "b"]
    assert registry.fused_labels() == ("cat", "dog", "hamster")
    assert registry.ensembles == ("detect_a", "detect_b", "detect_c", "detect_all")


def test_no_detect_all_when_nothing_is_fused(folder):
    registry = load_models(
        write(
            folder,
            """
        [[detector]]
        name = "a"
        runtime = "onnx"
        artifact = "model.onnx"
        family = "centernet"
        fuse = false
    """,
        )
    )
    assert registry.ensembles == ("detect_a",)


@pytest.mark.parametrize(
    "entry, key, words",
    [
        ('runtime = "tflite"', "runtime", "unknown runtime 'tflite'"),
        ('family = "retinanet"', "family", "unknown family 'retinanet'"),
        ('family = "no_such_module:Thing"', "family", "cannot import 'no_such_module'"),
        ('artifact = "missing.onnx"', "artifact", "does not exist"),
        ('labels = "missing.txt"', "labels", "cannot read"),
        ("bins = 11", "bins", "unknown key 'bins'"),
        ("fuse = 1", "fuse", "must be a boolean"),
        ('native = "no"', "native", "must be a boolean"),
        ("instances = 0", "instances", "must be 1..64"),
        ('recipe = "nanodet_m"', "artifact", "either artifact"),
        ("max_boxes = 10.5", "max_boxes", "must be an integer"),
    ],
)
def test_a_broken_entry_is_refused_naming_file_entry_and_key(folder, entry, key, words):
    base = {
        "name": 'name = "parts"',
        "runtime": 'runtime = "onnx"',
        "artifact": 'artifact = "model.onnx"',
        "family": 'family = "centernet"',
    }
    overridden = entry.split(" = ")[0]
    lines = [line for k, line in base.items() if k != overridden] + [entry]
    path = write(folder, "[[detector]]\n" + "\n".join(lines) + "\n")
    message = refused(path)
    assert message.startswith(str(path.relative_to(Path.cwd())) if path.is_relative_to(
        Path.cwd()) else str(path))  # fmt: skip
    assert "detector 'parts' (entry 1)" in message
    assert f"key {key!r}" in message
    assert words in message


def test_duplicate_names_are_refused_naming_both_entries(folder):
    entry = """
        [[detector]]
        name = "twice"
        runtime = "onnx"
        artifact = "model.onnx"
        family = "centernet"
    """
    message = refused(write(folder, entry + entry))
    assert "detector 'twice' (entry 2): key 'name'" in message and "entry 1" in message


@pytest.mark.parametrize("name", ["Parts", "2d", "with-dash", "detect_x", "image_decode", "all"])
def test_names_that_cannot_be_served_are_refused(folder, name):
    message = refused(
        write(
            folder,
            f"""
        [[detector]]
        name = "{name}"
        runtime = "onnx"
        artifact = "model.onnx"
        family = "centernet"
    """,
        )
    )
    assert "key 'name'" in message


def test_a_missing_name_or_runtime_or_family_is_refused(folder):
    assert "key 'name': missing" in refused(
        write(
            folder,
            """
        [[detector]]
        runtime = "onnx"
    """,
        )
    )
    assert "key 'runtime': missing" in refused(
        write(
            folder,
            """
        [[detector]]
        name = "a"
    """,
        )
    )
    assert "key 'family': missing" in refused(
        write(
            folder,
            """
        [[detector]]
        name = "a"
        runtime = "onnx"
        artifact = "model.onnx"
    """,
        )
    )


def test_a_label_count_the_family_cannot_predict_is_refused(folder):
    message = refused(
        write(
            folder,
            """
        [[detector]]
        name = "coco_ssd"
        runtime = "onnx"
        artifact = "model.onnx"
        family = "ssd"
        labels = "parts.txt"
    """,
        )
    )
    assert "key 'labels'" in message and "3 labels" in message and "80 classes" in message


def test_a_label_count_that_disagrees_with_the_onnx_output_is_refused(folder):
    onnx_model(folder / "yolo.onnx", ["batch", 84, 2100])  # 4 + 80 classes
    message = refused(
        write(
            folder,
            """
        [[detector]]
        name = "parts"
        runtime = "onnx"
        artifact = "yolo.onnx"
        family = "yolo"
        labels = "parts.txt"
    """,
        )
    )
    assert "key 'labels'" in message and "[84, 2100]" in message and "[7, -1]" in message


def test_a_label_count_that_disagrees_with_the_class_names_in_an_export_is_refused(folder):
    import json
    import zipfile

    # Ultralytics writes the class names into a TorchScript's extra/config.txt.
    with zipfile.ZipFile(folder / "yolo.torchscript", "w") as archive:
        archive.writestr("yolo/extra/config.txt", json.dumps({"names": {"0": "a", "1": "b"}}))
    message = refused(
        write(
            folder,
            """
        [[detector]]
        name = "parts"
        runtime = "torchscript"
        artifact = "yolo.torchscript"
        family = "yolo"
        labels = "parts.txt"
    """,
        )
    )
    assert (
        "key 'labels'" in message and "3 labels" in message and "names 2 classes (a, b)" in message
    )


def test_a_label_count_that_fits_the_onnx_output_is_accepted(folder):
    onnx_model(folder / "yolo.onnx", ["batch", 7, 2100])  # 4 + 3 classes
    (d,) = load_models(
        write(
            folder,
            """
        [[detector]]
        name = "parts"
        runtime = "onnx"
        artifact = "yolo.onnx"
        family = "yolo"
        labels = "parts.txt"
    """,
        )
    ).detectors
    assert isinstance(d.family, YOLO) and d.family.num_classes == 3


def test_a_savedmodel_artifact_must_be_a_savedmodel_folder(folder):
    message = refused(
        write(
            folder,
            """
        [[detector]]
        name = "tf"
        runtime = "savedmodel"
        artifact = "."
        family = "ssd"
    """,
        )
    )
    assert "key 'artifact'" in message and "saved_model.pb" in message


def test_a_recipe_must_be_known_and_built_for_the_runtime(folder):
    assert "unknown recipe" in refused(
        write(
            folder,
            """
        [[detector]]
        name = "a"
        runtime = "onnx"
        recipe = "yolov99"
        family = "centernet"
    """,
        )
    )
    assert "builds a torchscript artifact" in refused(
        write(
            folder,
            """
        [[detector]]
        name = "a"
        runtime = "onnx"
        recipe = "nanodet_m"
        family = "nanodet"
    """,
        )
    )


def test_toml_syntax_errors_and_stray_tables_are_refused_naming_the_file(folder):
    assert "not valid TOML" in refused(write(folder, "[[detector]\nname = 1\n"))
    assert "unknown top-level key 'model'" in refused(write(folder, "[[model]]\nname = 'a'\n"))
    assert "no [[detector]]" in refused(write(folder, "# nothing\n"))
    assert "no such models file" in refused(folder / "absent.toml")


def test_a_users_family_class_is_imported_from_the_models_files_folder(folder):
    (folder / "inverted_families.py").write_text(
        textwrap.dedent("""
        from dataclasses import dataclass

        import numpy as np

        from ensemble.families.centernet import CenterNet


        @dataclass(frozen=True)
        class Options:
            input_size: int = 512
            max_boxes: int = 100
            invert: bool = False


        class InvertedCenterNet(CenterNet):
            Options = Options

            def preprocess(self, image_rgb):
                image = 255 - image_rgb if self.options.invert else image_rgb
                return super().preprocess(np.ascontiguousarray(image))
    """)
    )
    (d,) = load_models(
        write(
            folder,
            """
        [[detector]]
        name = "inverted"
        runtime = "onnx"
        artifact = "model.onnx"
        family = "inverted_families:InvertedCenterNet"
        invert = true
    """,
        )
    ).detectors
    assert type(d.family).__name__ == "InvertedCenterNet" and d.family.options.invert
    assert d.search_path == (str(folder),)
    white = np.full((4, 4, 3), 255, np.uint8)
    assert float(d.family.preprocess(white).max()) == 0.0


def test_a_users_class_that_is_not_a_family_is_refused(folder):
    (folder / "not_family.py").write_text("class Thing:\n    pass\n")
    message = refused(
        write(
            folder,
            """
        [[detector]]
        name = "a"
        runtime = "onnx"
        artifact = "model.onnx"
        family = "not_family:Thing"
    """,
        )
    )
    assert "key 'family'" in message and "subclasses ensemble.families.Family" in message


def test_the_python_runtime_takes_a_python_file(folder):
    message = refused(
        write(
            folder,
            """
        [[detector]]
        name = "a"
        runtime = "python"
        artifact = "model.onnx"
        family = "centernet"
    """,
        )
    )
    assert "key 'artifact'" in message and ".py file" in message
