"""Every generated config parses with Triton's own ModelConfig protobuf, and every
ensemble is wired correctly, for all three targets."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from ensemble import configgen, contract
from ensemble.detectors import DETECTORS

TARGETS = {
    "cpu": configgen.make_target("cpu"),
    "gpu": configgen.make_target("gpu", (0, 1, 2, 3)),
    "ngc": configgen.make_target("ngc", (0, 1, 2, 3)),
}


def parse_repository(target) -> dict[str, mc.ModelConfig]:
    configs = {}
    for rel, text in configgen.render(target).items():
        if rel.endswith("/config.pbtxt"):
            config = text_format.Parse(text, mc.ModelConfig())
            assert config.name == rel.split("/")[0], f"{rel}: name differs from its folder"
            configs[config.name] = config
    return configs


@pytest.fixture(params=list(TARGETS), scope="module")
def repository(request):
    return request.param, parse_repository(TARGETS[request.param])


def io(config: mc.ModelConfig, kind: str) -> dict[str, mc.ModelInput | mc.ModelOutput]:
    return {t.name: t for t in getattr(config, kind)}


def test_every_ensemble_of_the_contract_is_generated(repository):
    _, configs = repository
    for name in contract.ENSEMBLES:
        assert configs[name].platform == "ensemble"


def test_ensemble_public_tensors_follow_the_contract(repository):
    _, configs = repository
    for name in contract.ENSEMBLES:
        config = configs[name]
        inputs, outputs = io(config, "input"), io(config, "output")
        image = inputs[contract.IMAGE]
        assert image.data_type == mc.TYPE_STRING and list(image.dims) == [1]
        assert not image.optional
        for threshold in (contract.SCORE_THRESHOLD, contract.IOU_THRESHOLD):
            assert inputs[threshold].optional and inputs[threshold].data_type == mc.TYPE_FP32
        assert list(outputs[contract.DETECTIONS].dims) == [contract.MAX_DETECTIONS, 6]
        assert outputs[contract.DETECTIONS].data_type == mc.TYPE_FP32
        assert outputs[contract.NUM_DETECTIONS].data_type == mc.TYPE_INT32
        assert outputs[contract.ANNOTATED_IMAGE].data_type == mc.TYPE_STRING
        assert config.max_batch_size >= 1
        labels = config.parameters[contract.LABELS_PARAMETER].string_value
        assert '"person"' in labels and '"toothbrush"' in labels


def test_detect_all_adds_one_output_set_per_framework(repository):
    _, configs = repository
    outputs = io(configs[contract.DETECT_ALL], "output")
    for d in DETECTORS:
        for name in contract.framework_outputs(d.framework):
            assert name in outputs
    assert len(outputs) == 3 * (1 + len(DETECTORS))


def test_ensemble_wiring_maps_only_existing_tensors_with_matching_types(repository):
    target, configs = repository
    for name in contract.ENSEMBLES:
        ens = configs[name]
        # ensemble tensor name -> (dtype, dims) of whoever provides it
        available = {t.name: (t.data_type, tuple(t.dims)) for t in ens.input}
        producers: dict[str, str] = {}
        steps = list(ens.ensemble_scheduling.step)
        for step in steps:
            model = configs[step.model_name]  # KeyError: a step names a missing model
            assert ens.max_batch_size <= model.max_batch_size, (name, step.model_name)
            outs = io(model, "output")
            for key, value in step.output_map.items():
                assert key in outs, f"{name}: {step.model_name} has no output {key}"
                assert value not in producers, f"{name}: {value} produced twice"
                producers[value] = step.model_name
                available[value] = (outs[key].data_type, tuple(outs[key].dims))
        for step in steps:
            model = configs[step.model_name]
            ins = io(model, "input")
            for key, value in step.input_map.items():
                assert key in ins, f"{name}: {step.model_name} has no input {key}"
                assert value in available, f"{name}: nothing provides {value}"
                dtype, dims = available[value]
                assert dtype == ins[key].data_type, f"{name}: {value} dtype mismatch"
                assert dims == tuple(ins[key].dims), f"{name}: {value} dims {dims} vs {ins[key]}"
            required = {n for n, t in ins.items() if not t.optional}
            missing = required - set(step.input_map)
            assert not missing, f"{name}: {step.model_name} inputs {missing} not mapped ({target})"
        for out in ens.output:
            assert out.name in producers, f"{name}: no step produces output {out.name}"
            assert available[out.name] == (out.data_type, tuple(out.dims))


def test_ensembles_never_need_a_loop_between_steps(repository):
    _, configs = repository
    for name in contract.ENSEMBLES:
        ens = configs[name]
        produced_by = {
            v: s.model_name for s in ens.ensemble_scheduling.step for v in s.output_map.values()
        }
        seen: set[str] = {t.name for t in ens.input}
        pending = list(ens.ensemble_scheduling.step)
        while pending:  # steps become runnable once all their inputs exist
            ready = [s for s in pending if all(v in seen for v in s.input_map.values())]
            assert ready, f"{name}: steps {[s.model_name for s in pending]} can never run"
            for s in ready:
                seen.update(s.output_map.values())
                pending.remove(s)
        assert produced_by


def detector_configs(configs):
    return [configs[d.framework.detector] for d in DETECTORS]


def test_detectors_batch_dynamically_and_warm_up(repository):
    _, configs = repository
    for config in detector_configs(configs):
        assert config.dynamic_batching.preferred_batch_size
        assert max(config.dynamic_batching.preferred_batch_size) <= config.max_batch_size
        assert config.dynamic_batching.max_queue_delay_microseconds > 0
        assert len(config.model_warmup) == 1


def test_cpu_target_runs_everything_in_the_python_backend_on_cpu():
    configs = parse_repository(TARGETS["cpu"])
    for config in configs.values():
        if config.platform == "ensemble":
            continue
        assert config.backend == "python", config.name
        assert all(g.kind == mc.ModelInstanceGroup.KIND_CPU for g in config.instance_group)


def test_gpu_target_gives_every_detector_one_instance_group_per_gpu():
    configs = parse_repository(TARGETS["gpu"])
    for config in detector_configs(configs):
        groups = config.instance_group
        assert [list(g.gpus) for g in groups] == [[0], [1], [2], [3]], config.name
        assert all(g.kind == mc.ModelInstanceGroup.KIND_GPU for g in groups)
        assert config.backend == "python"


def test_gpu_target_takes_any_gpu_list():
    configs = parse_repository(configgen.make_target("gpu", (2, 5)))
    for config in detector_configs(configs):
        assert [list(g.gpus) for g in config.instance_group] == [[2], [5]]


def test_ngc_target_uses_native_backends_for_torchscript_and_savedmodel():
    configs = parse_repository(TARGETS["ngc"])
    by_framework = {d.framework.key: configs[d.framework.detector] for d in DETECTORS}
    assert by_framework["pytorch"].platform == "pytorch_libtorch"
    assert by_framework["pytorch"].default_model_filename == "model.pt"
    assert by_framework["tensorflow"].platform == "tensorflow_savedmodel"
    assert by_framework["tensorflow"].default_model_filename == "model.savedmodel"
    assert by_framework["onnxruntime"].backend == "python"
    for config in by_framework.values():
        assert len(config.instance_group) == 4
    # libtorch binds tensors by position: its names must follow the INPUT__i convention.
    assert [t.name for t in by_framework["pytorch"].input] == ["INPUT__0"]


def test_ngc_target_repository_has_no_python_runner_for_native_models():
    files = configgen.render(TARGETS["ngc"])
    assert "nanodet_m/1/model.py" not in files
    assert "ssd_mobilenet_v2/1/model.py" not in files
    assert "centernet_mobilenetv3/1/model.py" in files


def test_unknown_target_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="cpu, gpu, ngc"):
        configgen.make_target("tpu")


def test_committed_model_repository_matches_the_spec():
    assert configgen.stale_files() == [], "run `python -m ensemble.configgen --update`"


def test_docker_compose_pins_an_image_that_has_the_tensorflow_backend():
    compose = (configgen.REPO_ROOT / "docker-compose.yml").read_text()
    assert (
        configgen.NGC_IMAGE.split(":")[1]
        in (configgen.REPO_ROOT / "scripts" / "ngc.Dockerfile").read_text()
    )
    assert "count: 4" in compose or "device_ids" in compose


def test_gpu_repository_links_and_ngc_repository_copies_the_built_artifacts(tmp_path):
    from ensemble.build import models_dir

    gpu = configgen.write_repository(TARGETS["gpu"], tmp_path / "gpu", models_dir())
    ngc = configgen.write_repository(
        TARGETS["ngc"], tmp_path / "ngc", models_dir(), copy_artifacts=True
    )
    for d in DETECTORS:
        linked = gpu / d.framework.detector / "1" / d.artifact
        copied = ngc / d.framework.detector / "1" / d.artifact
        assert (
            linked.is_symlink()
            and linked.resolve() == (models_dir() / d.framework.detector / d.artifact).resolve()
        )
        # A container mounts the folder: links pointing outside it would dangle there.
        assert copied.exists() and not copied.is_symlink()
    assert (ngc / "nanodet_m" / "1" / "model.pt").stat().st_size > 1_000_000


def test_repository_without_built_models_says_how_to_build_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="make models"):
        configgen.write_repository(TARGETS["cpu"], tmp_path / "repo", tmp_path / "no-models")
