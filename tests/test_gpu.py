"""The runners on a GPU give what they give on the CPU (the `gpu` target's promise).

Needs a CUDA device and GPU builds of the frameworks; skipped cleanly without them.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ensemble.build import artifact_path
from ensemble.detectors import DETECTORS
from ensemble.families import FAMILIES
from ensemble.runners import Device, load_runner

pytestmark = pytest.mark.gpu


def gpu_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


@pytest.mark.skipif(gpu_count() == 0, reason="no CUDA device")
@pytest.mark.parametrize("detector", DETECTORS, ids=lambda d: d.framework.key)
def test_runner_on_each_gpu_matches_the_cpu(detector, photos):
    image = cv2.cvtColor(
        cv2.imdecode(np.frombuffer(photos["astronaut"], np.uint8), cv2.IMREAD_COLOR),
        cv2.COLOR_BGR2RGB,
    )
    batch = FAMILIES[detector.family].preprocess(image)[None]
    path = artifact_path(detector)
    expected = load_runner(detector, path, Device("cpu"), threads=2)(batch)
    for index in range(gpu_count()):
        runner = load_runner(detector, path, Device("gpu", index), threads=2)
        assert str(index) in runner.describe
        got = runner(batch)
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, atol=2e-2, err_msg=name)
