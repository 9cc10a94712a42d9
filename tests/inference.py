"""Request tensors for the tests that call the server with tritonclient directly.

Built from ``ensemble.contract`` here rather than by ``client.payload.build_inputs``: the
server tests check the contract itself, and they send what the client refuses to build
(a threshold of 1.5, an image tensor of garbage), over gRPC or HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np
import tritonclient.grpc as grpcclient

from ensemble import contract


def tensor(name: str, array: np.ndarray, datatype: str, protocol: ModuleType = grpcclient):
    """The input ``name`` holding ``array`` as Triton's ``datatype`` ("BYTES", "FP32"...),
    for ``protocol``: ``tritonclient.grpc`` or ``tritonclient.http``."""
    inferred = protocol.InferInput(name, list(array.shape), datatype)
    inferred.set_data_from_numpy(array)
    return inferred


def image_inputs(
    images: Sequence[bytes],
    score: float | None = None,
    iou: float | None = None,
    protocol: ModuleType = grpcclient,
) -> list:
    """One request's inputs: ``images`` (encoded, one per row of the batch) as IMAGE, then
    SCORE_THRESHOLD and IOU_THRESHOLD (the same for every image) where given, sent as
    they are, even outside 0..1: the server, not this helper, judges them."""
    n = len(images)
    rows = np.empty((n, 1), dtype=np.object_)
    rows[:, 0] = list(images)
    inputs = [tensor(contract.IMAGE, rows, contract.DTYPES[contract.IMAGE], protocol)]
    for name, value in ((contract.SCORE_THRESHOLD, score), (contract.IOU_THRESHOLD, iou)):
        if value is not None:
            values = np.full((n, 1), value, np.float32)
            inputs.append(tensor(name, values, contract.DTYPES[name], protocol))
    return inputs
