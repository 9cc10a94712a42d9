"""Triton Python-backend adapters: the classes behind every generated ``model.py``.

They only move tensors between Triton and the plain functions of ``imaging``,
``boxes`` and ``families``. Every request is answered on its own: a bad image gets
an error response for that request and the model goes on serving the others.
Dtypes of outputs are read from the model config, not repeated here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from ensemble import contract, spec
from ensemble.boxes import (
    fuse_across_labels,
    no_alternatives,
    pack_alternatives,
    pack_detections,
    weighted_box_fusion,
)
from ensemble.cpu_share import SiblingInstances, intra_op_threads
from ensemble.families import Family, make_options, resolve
from ensemble.imaging import ImageError, decode_scaled, draw_detections, encode_jpeg, fit_within

Arrays = dict[str, np.ndarray]


class RequestError(ValueError):
    """A request the client got wrong; its message goes back to the client."""


def _log(message: str) -> None:
    pb_utils.Logger.log_info(message)


class _Adapter:
    """Reads the config once, then answers each request with ``process``."""

    def initialize(self, args: dict) -> None:
        self.config = json.loads(args["model_config"])
        self.model_name = args["model_name"]
        self.parameters = {
            k: v["string_value"] for k, v in self.config.get("parameters", {}).items()
        }
        self.output_dtypes = {
            o["name"]: pb_utils.triton_string_to_numpy(o["data_type"])
            for o in self.config["output"]
        }
        self.input_names = [i["name"] for i in self.config["input"]]
        self.setup(args)

    def setup(self, args: dict) -> None:
        pass

    def process(self, inputs: Arrays) -> Arrays:
        raise NotImplementedError

    def _inputs(self, request) -> Arrays:
        inputs = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:  # optional inputs may be absent
                inputs[name] = tensor.as_numpy()
        return inputs

    def _response(self, outputs: Arrays, requested: list[str] | None = None):
        """The response with ``outputs`` that were ``requested`` (None: all), each in
        its config dtype (no copy where it already is)."""
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor(name, np.asarray(value, dtype=self.output_dtypes[name]))
                for name, value in outputs.items()
                if requested is None or name in requested
            ]
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                # Only what the ensemble maps: a step of two ensembles is asked for less
                # in one (preprocessing's pixels in detect_all), and each output costs a
                # copy into shared memory.
                names = getattr(request, "requested_output_names", None)
                requested = names() if names is not None else None
                outputs = self.process(self._inputs(request))
                responses.append(self._response(outputs, requested))
            except (ImageError, RequestError) as e:
                # INVALID_ARG tells the client the request was wrong, not the server.
                error = pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            except Exception as e:  # never let one request take the model down
                pb_utils.Logger.log_error(f"{self.model_name}: {type(e).__name__}: {e}")
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"{self.model_name} failed: {e}")
                    )
                )
        return responses


def _which(i: int, n: int) -> str:
    return f"image {i + 1} of {n}: " if n > 1 else ""


def _max_sides(inputs: Arrays, batch: int) -> np.ndarray:
    """Per-image ANNOTATED_MAX_SIDE from the optional [B, 1] input (0: full size)."""
    name = contract.ANNOTATED_MAX_SIDE
    if name not in inputs:
        return np.zeros(batch, np.int64)
    values = inputs[name].reshape(-1).astype(np.int64)
    if values.shape[0] != batch:
        raise RequestError(f"{name} has {values.shape[0]} values for {batch} images")
    if np.any((values < 0) | (values > contract.MAX_IMAGE_SIDE)):
        raise RequestError(
            f"{name} must lie in [0, {contract.MAX_IMAGE_SIDE}] pixels (0: full size), "
            f"got {values.tolist()}"
        )
    return values


class _Decoding(_Adapter):
    """Decodes photo files: each only as large as its request needs (contract
    ANNOTATED_MAX_SIDE: a reduced JPEG decode when a smaller annotated image is asked
    for, never below what the detectors need, ``decode_min_side``)."""

    def setup(self, args: dict) -> None:
        self.min_side = int(self.parameters.get("decode_min_side", "0"))

    def decode(self, inputs: Arrays) -> Arrays:
        """IMAGE [B, 1] -> DECODED_IMAGE [B, Hmax, Wmax, 3] (zero-padded), IMAGE_SIZE
        and ORIGINAL_SIZE [B, 2] (height, width)."""
        encoded = inputs[contract.IMAGE].reshape(-1)
        max_sides = _max_sides(inputs, len(encoded))
        images, originals = [], []
        for i, data in enumerate(encoded):
            min_side = max(int(max_sides[i]), self.min_side) if max_sides[i] > 0 else 0
            try:
                image, original = decode_scaled(bytes(data), min_side)
            except ImageError as e:
                raise ImageError(_which(i, len(encoded)) + str(e)) from None
            images.append(image)
            originals.append(original)
        if len(images) == 1:
            batch = images[0][None]  # nothing to pad: no copy
        else:
            height = max(im.shape[0] for im in images)
            width = max(im.shape[1] for im in images)
            batch = np.zeros((len(images), height, width, 3), np.uint8)
            for i, im in enumerate(images):
                batch[i, : im.shape[0], : im.shape[1]] = im
        return {
            spec.DECODED_IMAGE: batch,
            spec.IMAGE_SIZE: np.array([im.shape[:2] for im in images], np.int32),
            spec.ORIGINAL_SIZE: np.array(originals, np.int32),
        }


class Decode(_Decoding):
    """IMAGE bytes [B, 1] -> DECODED_IMAGE [B, Hmax, Wmax, 3] (zero-padded), IMAGE_SIZE,
    ORIGINAL_SIZE."""

    def process(self, inputs: Arrays) -> Arrays:
        return self.decode(inputs)


def _originals(inputs: Arrays):
    """Yield each image of the batch cut to its real size (undoing Decode's padding)."""
    for image, (h, w) in zip(inputs[spec.DECODED_IMAGE], inputs[spec.IMAGE_SIZE], strict=True):
        yield image[:h, :w]


def search_path(parameters: dict[str, str]) -> tuple[str, ...]:
    """Folders a user's family or model code imports from (none for built-ins)."""
    return tuple(json.loads(parameters.get("search_path", "[]")))


def family_from_parameters(parameters: dict[str, str]) -> Family:
    """The detector's family, rebuilt from its step's config parameters (reference,
    options and labels, as ``spec.family_parameters`` wrote them)."""
    cls = resolve(parameters["family"], search_path(parameters))
    options = make_options(cls, json.loads(parameters.get("options", "{}")))
    return cls(options, json.loads(parameters["labels"]))


class Preprocess(_Decoding):
    """The photo file (then it decodes it, and hands the pixels on too) or the decoded
    pixels -> the detector's input, PREPROCESSED."""

    def setup(self, args: dict) -> None:
        super().setup(args)
        self.family = family_from_parameters(self.parameters)

    def process(self, inputs: Arrays) -> Arrays:
        if contract.IMAGE in inputs:
            inputs = {**inputs, **self.decode(inputs)}
        elif spec.DECODED_IMAGE not in inputs:
            raise RequestError(f"{self.model_name} needs {contract.IMAGE} or decoded pixels")
        outputs = {k: inputs[k] for k in (spec.DECODED_IMAGE, spec.IMAGE_SIZE, spec.ORIGINAL_SIZE)
                   if k in inputs}  # fmt: skip
        ready = [self.family.preprocess(im) for im in _originals(inputs)]
        # np.stack copies: a lone image (a 3 MB input for CenterNet) is only given its batch axis.
        outputs[spec.PREPROCESSED] = ready[0][None] if len(ready) == 1 else np.stack(ready)
        return outputs


def _threshold(inputs: Arrays, name: str, default: float, batch: int) -> np.ndarray:
    """Per-image thresholds from an optional [B, 1] input, checked to lie in [0, 1]."""
    if name not in inputs:
        return np.full(batch, default, np.float32)
    values = inputs[name].reshape(-1).astype(np.float32)
    if values.shape[0] != batch:
        raise RequestError(f"{name} has {values.shape[0]} values for {batch} images")
    if not np.all((values >= 0.0) & (values <= 1.0)):
        raise RequestError(f"{name} must lie in [0, 1], got {values.tolist()}")
    return values


def _thresholds(inputs: Arrays, batch: int) -> tuple[np.ndarray, np.ndarray]:
    return (
        _threshold(inputs, contract.SCORE_THRESHOLD, contract.DEFAULT_SCORE_THRESHOLD, batch),
        _threshold(inputs, contract.IOU_THRESHOLD, contract.DEFAULT_IOU_THRESHOLD, batch),
    )


class _Drawing(_Adapter):
    """A step whose results are also drawn: detections packed to the contract's fixed
    rows, and each image's boxes drawn on its original pixels as a JPEG."""

    def setup(self, args: dict) -> None:
        self.quality = int(self.parameters.get("jpeg_quality", "90"))
        self.labels = json.loads(self.parameters["labels"])

    def _results(self, inputs: Arrays, per_image: list[np.ndarray]) -> Arrays:
        """``per_image`` detections, in pixels of the original photos, packed and drawn:
        on the decoded pixels, scaled down to ANNOTATED_MAX_SIDE where one is asked for."""
        packed = [pack_detections(d) for d in per_image]
        max_sides = _max_sides(inputs, len(packed))
        originals = inputs[spec.ORIGINAL_SIZE]
        jpegs = []
        for i, (image, (rows, count)) in enumerate(zip(_originals(inputs), packed, strict=True)):
            image = fit_within(image, int(max_sides[i]), tuple(originals[i]))
            shown = _rescaled(rows[:count], originals[i], image.shape[:2])
            drawn = draw_detections(image, shown, self.labels)
            jpegs.append([encode_jpeg(drawn, self.quality)])
        return {
            contract.DETECTIONS: np.stack([p[0] for p in packed]),
            contract.NUM_DETECTIONS: np.array([[p[1]] for p in packed], np.int32),
            contract.ANNOTATED_IMAGE: np.array(jpegs, dtype=np.object_),
        }


def _rescaled(rows: np.ndarray, source: tuple[int, int], target: tuple[int, int]) -> np.ndarray:
    """Detection rows in pixels of an image of size ``source`` (height, width) -> in
    pixels of the same image at size ``target``; the rows themselves when equal."""
    (source_h, source_w), (target_h, target_w) = (tuple(map(int, source)), tuple(map(int, target)))
    if (source_h, source_w) == (target_h, target_w):
        return rows
    rows = np.array(rows, np.float32, copy=True)
    rows[:, [0, 2]] *= target_w / source_w
    rows[:, [1, 3]] *= target_h / source_h
    return rows


class Postprocess(_Drawing):
    def setup(self, args: dict) -> None:
        super().setup(args)
        self.family = family_from_parameters(self.parameters)
        self.raw_names = [n for n in self.input_names if n not in {
            spec.DECODED_IMAGE, spec.IMAGE_SIZE, spec.ORIGINAL_SIZE, contract.SCORE_THRESHOLD,
            contract.IOU_THRESHOLD, contract.ANNOTATED_MAX_SIDE}]  # fmt: skip

    def process(self, inputs: Arrays) -> Arrays:
        sizes, originals = inputs[spec.IMAGE_SIZE], inputs[spec.ORIGINAL_SIZE]
        scores, ious = _thresholds(inputs, len(sizes))
        results = []
        for i, (h, w) in enumerate(sizes):
            raw = {name: inputs[name][i] for name in self.raw_names}
            # Boxes in pixels of the decoded image, then of the original photo.
            rows = self.family.postprocess(raw, (int(h), int(w)), scores[i], ious[i])
            results.append(_rescaled(rows, (h, w), originals[i]))
        return self._results(inputs, results)


def _merge_labels(inputs: Arrays, batch: int) -> np.ndarray:
    """Per-image MERGE_LABELS from the optional [B, 1] input (absent: the default)."""
    name = contract.MERGE_LABELS
    if name not in inputs:
        return np.full(batch, contract.DEFAULT_MERGE_LABELS)
    values = inputs[name].reshape(-1).astype(bool)
    if values.shape[0] != batch:
        raise RequestError(f"{name} has {values.shape[0]} values for {batch} images")
    return values


class Fuse(_Drawing):
    """Fuses the detectors' results by label name: each detector's class ids are mapped
    into the union of their label lists (this step's ``labels``), and a label's support
    counts the detectors that know it only. Each object gets one box, its label the
    best supported (``boxes.fuse_across_labels``), or with MERGE_LABELS false one box per
    label (``boxes.weighted_box_fusion``)."""

    def setup(self, args: dict) -> None:
        super().setup(args)
        members = json.loads(self.parameters["detectors"])
        index = {label: i for i, label in enumerate(self.labels)}
        # Per detector: (its detections, its count) as this step's inputs, and the
        # ensemble outputs they are passed through to (see spec.all_ensemble).
        self.names = [(f"{m['name']}_detections", f"{m['name']}_num_detections")
                      for m in members]  # fmt: skip
        self.passed = [contract.detector_outputs(m["name"])[:2] for m in members]
        # Per detector: its class id -> the union's, and the union ids it knows.
        self.to_union = [np.array([index[x] for x in m["labels"]], np.int64) for m in members]
        self.known = [set(ids.tolist()) for ids in self.to_union]

    def _in_union(self, detections: np.ndarray, member: int) -> np.ndarray:
        ids = np.rint(detections[:, 5]).astype(np.int64)
        table = self.to_union[member]
        inside = (ids >= 0) & (ids < len(table))
        mapped = detections[inside].copy()
        mapped[:, 5] = table[ids[inside]]
        return mapped

    def process(self, inputs: Arrays) -> Arrays:
        sizes = inputs[spec.IMAGE_SIZE]
        scores, ious = _thresholds(inputs, len(sizes))
        merges = _merge_labels(inputs, len(sizes))
        results, alternatives = [], []
        for i in range(len(sizes)):
            sets = [
                self._in_union(inputs[dets][i, : int(inputs[num][i, 0])], m)
                for m, (dets, num) in enumerate(self.names)
            ]
            if merges[i]:
                fused, others = fuse_across_labels(
                    sets, ious[i], scores[i], known_classes=self.known
                )
            else:
                fused = weighted_box_fusion(sets, ious[i], scores[i], known_classes=self.known)
                others = no_alternatives(len(fused))
            # Fusion scales down what only some models saw; the contract promises
            # scores >= the threshold, so the fused result is filtered again. The rows
            # stay sorted by score, the order packing keeps, so their alternatives with them.
            kept = fused[:, 4] >= scores[i]
            results.append(fused[kept])
            alternatives.append(pack_alternatives(others[kept]))
        outputs = self._results(inputs, results)
        outputs[contract.ALTERNATIVE_LABELS] = np.stack(alternatives)
        for (dets, num), (out_dets, out_num) in zip(self.names, self.passed, strict=True):
            outputs[out_dets], outputs[out_num] = inputs[dets], inputs[num]
        return outputs


class DetectorRunner(_Adapter):
    """A detector's Python runner: its artifact run by ``ensemble.runners`` where no
    native backend serves it; the dynamic batcher's requests share one forward pass.

    Which runtime runs it and the tensors it has come from the model config."""

    def setup(self, args: dict) -> None:
        from ensemble.runners import Device, TensorNames, load_runner

        kind = "gpu" if args.get("model_instance_kind") == "GPU" else "cpu"
        device = Device(kind, int(args.get("model_instance_device_id") or 0))
        path = Path(args["model_repository"]) / args["model_version"]
        path = path / self.parameters["artifact"]
        self.threads = int(self.parameters.get("threads", "2"))
        names = TensorNames(
            self.input_names[0],
            tuple(o["name"] for o in self.config["output"]),
            search_path(self.parameters),
        )
        self.runner = load_runner(self.parameters["runtime"], path, names, device, self.threads)
        self.input_name = names.input
        # On the CPU a run takes all its threads alone, a share under load (cpu_share).
        self.siblings = None
        if device.kind == "cpu" and self.runner.adapts_threads:
            self.siblings = SiblingInstances.of_model(
                args["model_repository"], self.model_name, args["model_instance_name"]
            )
        _log(f"{self.model_name}: loaded {path.name} as {self.runner.describe}")

    def _run(self, batch: np.ndarray) -> Arrays:
        if self.siblings is None:
            return self.runner(batch)
        with self.siblings.running() as others:
            self.runner.set_threads(intra_op_threads(self.threads, len(batch), others))
            return self.runner(batch)

    def _check_shapes(self, outputs: Arrays) -> None:
        """The model's outputs must have the dims its family declares: a labels file that
        does not fit the model shows here, at the warm-up run, not as wrong boxes."""
        for output in self.config["output"]:
            got = np.shape(outputs[output["name"]])[1:]
            want = [int(d) for d in output["dims"]]
            fits = len(got) == len(want) and all(
                w <= 0 or g == w for g, w in zip(got, want, strict=True)
            )
            if not fits:
                raise RuntimeError(
                    f"output {output['name']!r} has dims {list(got)}, the models file's family "
                    f"and labels make it {want}: do the labels fit the model?"
                )

    def finalize(self) -> None:
        if self.siblings is not None:
            self.siblings.close()

    def execute(self, requests):
        try:
            batches = [self._inputs(r)[self.input_name] for r in requests]
            # One request (always at concurrency 1): its own array, no copy.
            batch = batches[0] if len(batches) == 1 else np.concatenate(batches)
            outputs = self._run(batch)
            self._check_shapes(outputs)
        except Exception as e:
            pb_utils.Logger.log_error(f"{self.model_name}: {type(e).__name__}: {e}")
            error = pb_utils.TritonError(f"{self.model_name} failed: {e}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses, start = [], 0
        for batch in batches:
            stop = start + len(batch)
            responses.append(self._response({n: v[start:stop] for n, v in outputs.items()}))
            start = stop
        return responses
