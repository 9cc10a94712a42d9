"""The runners on a GPU give what they give on the CPU (the `gpu` target's promise).

Each detector of the default ``models.toml`` is run on its built artifact by
``ensemble.runners.load_runner``, once on the CPU and once on every GPU, on the same
pre-processed photo. Needs a CUDA device and GPU builds of the frameworks; skipped
cleanly without them.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import require_models

from ensemble.registry import load_models
from ensemble.runners import Device, TensorNames, load_runner

pytestmark = [pytest.mark.models, pytest.mark.gpu]

DETECTORS = load_models().detectors


def gpu_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


@pytest.mark.skipif(gpu_count() == 0, reason="no CUDA device")
@pytest.mark.parametrize("detector", DETECTORS, ids=lambda d: d.name)
def test_runner_on_each_gpu_matches_the_cpu(detector, photos):
    require_models()
    image = cv2.cvtColor(
        cv2.imdecode(np.frombuffer(photos["astronaut"], np.uint8), cv2.IMREAD_COLOR),
        cv2.COLOR_BGR2RGB,
    )
    batch = detector.family.preprocess(image)[None]
    names = TensorNames(
        detector.inputs[0].name, tuple(t.name for t in detector.outputs), detector.search_path
    )
    path = detector.artifact_path()
    expected = load_runner(detector.runtime, path, names, Device("cpu"), threads=2)(batch)
    assert set(expected) == set(names.outputs)
    for index in range(gpu_count()):
        runner = load_runner(detector.runtime, path, names, Device("gpu", index), threads=2)
        assert f"gpu:{index}" in runner.describe
        got = runner(batch)
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, atol=2e-2, err_msg=name)
