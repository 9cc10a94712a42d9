"""One check shared by the bundled and the lab's detectors: a native backend's raw
outputs against the Python runner's on the same preprocessed photos."""

from __future__ import annotations

import numpy as np

# Native and Python runners run the same framework build on the same input; another
# thread count may change the order of a reduction, so float rounding is allowed, no
# more (the runs here have all been exact: max |diff| 0).
RTOL, ATOL = 1e-5, 1e-4
PHOTOS = ("astronaut", "coffee", "horse")


def compare_with_runners(grpc, registry, photos: dict[str, bytes]) -> list[tuple[str, str, float]]:
    """For every detector of ``registry`` that the server at ``grpc`` (a tritonclient
    gRPC client) runs natively: its model alone, called with the family's preprocessed
    photos (one, then a batch of three), against ``ensemble.runners`` running the same
    artifact in this process. Asserts equality within RTOL/ATOL; returns (detector,
    output, max |diff|) per comparison."""
    from ensemble.imaging import decode_scaled
    from ensemble.runners import Device, TensorNames, load_runner
    from tests.inference import tensor

    compared = []
    for d in registry.detectors:
        config = grpc.get_model_config(d.name, as_json=True)["config"]
        if not config.get("platform"):
            continue  # on its Python runner here: nothing native to compare
        (inp,) = config["input"]
        outputs = tuple(o["name"] for o in config["output"])
        runner = load_runner(
            d.runtime, d.artifact_path(), TensorNames(inp["name"], outputs), Device(), threads=2
        )
        images = [decode_scaled(photos[p], 1024)[0] for p in PHOTOS]
        batch = np.stack([d.family.preprocess(image) for image in images])
        for chunk in (batch[:1], batch):
            # The model's own input, typed as its config says ("TYPE_FP32" is "FP32").
            reply = grpc.infer(d.name, [tensor(inp["name"], chunk, inp["data_type"][5:])])
            expected = runner(chunk)
            for name in outputs:
                got = reply.as_numpy(name)
                np.testing.assert_allclose(
                    got, expected[name], rtol=RTOL, atol=ATOL, err_msg=f"{d.name} {name}"
                )
                compared.append((d.name, name, float(np.max(np.abs(got - expected[name])))))
    return compared
