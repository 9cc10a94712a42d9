"""ensemble.artifacts' signature reader against TensorFlow's own reading of a SavedModel,
and the bundled artifacts' tensor names against their families' (the unit tests of the
reader: test_artifact_signatures)."""

from __future__ import annotations

import pytest

from ensemble.artifacts import bind, read_signature

pytestmark = pytest.mark.models


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
