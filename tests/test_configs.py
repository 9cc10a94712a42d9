"""Every generated config parses with Triton's own ModelConfig protobuf, and every
ensemble is wired correctly, for all three targets, for the committed ``models.toml``
and for a models file of one's own (written here, with stand-in artifact files: a
TorchScript's contents are never read, libtorch binds it by position)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from ensemble import configgen, contract, recipes, spec
from ensemble.registry import Registry, load_models

pytestmark = pytest.mark.unit

TARGETS = {
    "cpu": configgen.make_target("cpu"),
    "gpu": configgen.make_target("gpu", (0, 1, 2, 3)),
    "ngc": configgen.make_target("ngc", (0, 1, 2, 3)),
}

# A models file of one's own: a YOLO TorchScript and a Python model of their own
# label lists (sharing "dog"), fused; a NanoDet TorchScript kept out of detect_all.
OWN_MODELS = """
[[detector]]
name = "parts"
title = "Parts YOLO 320"
runtime = "torchscript"
artifact = "parts.torchscript"
family = "yolo"
labels = "parts.txt"
input_size = 320

[[detector]]
name = "pets"
title = "Pets"
runtime = "python"
artifact = "pets_model.py"
family = "centernet"
labels = "pets.txt"

[[detector]]
name = "coco"
title = "NanoDet of my own"
runtime = "torchscript"
artifact = "nanodet.pt"
family = "nanodet"
fuse = false
instances = 3
preferred_batch_sizes = [2]
max_queue_delay_us = 500
"""
OWN_FILES = {
    "parts.txt": "bolt\nnut\ndog\n",
    "pets.txt": "cat\ndog\n",
    "parts.torchscript": "stand-in: only served, never read here",
    "pets_model.py": "class Model:\n    pass\n",
    "nanodet.pt": "stand-in",
}


def write_models(folder: Path, text: str, files: dict[str, str]) -> Path:
    """A models file and the files it names, in ``folder``; returns the file's path."""
    for name, content in files.items():
        (folder / name).write_text(content)
    path = folder / "models.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def own_registry(tmp_path_factory) -> Registry:
    return load_models(write_models(tmp_path_factory.mktemp("own"), OWN_MODELS, OWN_FILES))


REGISTRIES = {"committed": load_models()}


def parse_repository(target, registry: Registry | None = None) -> dict[str, mc.ModelConfig]:
    configs = {}
    for rel, text in configgen.render(target, registry).items():
        if rel.endswith("/config.pbtxt"):
            config = text_format.Parse(text, mc.ModelConfig())
            assert config.name == rel.split("/")[0], f"{rel}: name differs from its folder"
            configs[config.name] = config
    return configs


@pytest.fixture(
    params=[(m, t) for m in ("committed", "own") for t in TARGETS],
    ids=lambda p: "-".join(p),
    scope="module",
)
def repository(request, own_registry):
    """(target name, registry, configs by model name) for each models file and target."""
    models, target = request.param
    registry = own_registry if models == "own" else REGISTRIES[models]
    return target, registry, parse_repository(TARGETS[target], registry)


def io(config: mc.ModelConfig, kind: str) -> dict[str, mc.ModelInput | mc.ModelOutput]:
    return {t.name: t for t in getattr(config, kind)}


def parameter(config: mc.ModelConfig, key: str) -> str:
    assert key in config.parameters, f"{config.name} has no parameter {key!r}"
    return config.parameters[key].string_value


def test_one_model_per_step_detector_and_ensemble_of_the_spec(repository):
    _, registry, configs = repository
    repo = spec.repository_spec(registry)
    expected = [s.name for s in repo.python_steps] + [d.name for d in repo.detectors]
    expected += [e.name for e in repo.ensembles]
    assert sorted(configs) == sorted(expected)
    for name in registry.ensembles:
        assert configs[name].platform == "ensemble"


def test_the_committed_models_file_gives_the_three_ensembles_and_detect_all():
    assert REGISTRIES["committed"].ensembles == (
        "detect_pytorch",
        "detect_tensorflow",
        "detect_onnxruntime",
        contract.DETECT_ALL,
    )


def test_ensemble_public_tensors_follow_the_contract(repository):
    _, registry, configs = repository
    for name in registry.ensembles:
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


def test_every_ensemble_carries_its_labels_title_and_detectors(repository):
    _, registry, configs = repository
    # which backend runs each detector: its model's platform, or its Python runner
    backend = {d.name: configs[d.name].platform or "python" for d in registry.detectors}
    for d in registry.detectors:
        config = configs[d.ensemble]
        assert json.loads(parameter(config, contract.LABELS_PARAMETER)) == list(d.labels)
        assert parameter(config, contract.TITLE_PARAMETER) == d.title
        assert json.loads(parameter(config, contract.DETECTORS_PARAMETER)) == [
            {
                "name": d.name,
                "title": d.title,
                "runtime": d.runtime,
                "runtime_title": d.runtime_info.title,
                "labels": list(d.labels),
                "backend": backend[d.name],
            }
        ]
    fused = configs[contract.DETECT_ALL]
    assert json.loads(parameter(fused, contract.LABELS_PARAMETER)) == list(registry.fused_labels())
    assert parameter(fused, contract.TITLE_PARAMETER)
    assert json.loads(parameter(fused, contract.DETECTORS_PARAMETER)) == [
        {
            "name": d.name,
            "title": d.title,
            "runtime": d.runtime,
            "runtime_title": d.runtime_info.title,
            "labels": list(d.labels),
            "backend": backend[d.name],
        }
        for d in registry.fused
    ]


def test_committed_ensembles_serve_the_coco_labels():
    configs = parse_repository(TARGETS["cpu"])
    for name in REGISTRIES["committed"].ensembles:
        labels = json.loads(parameter(configs[name], contract.LABELS_PARAMETER))
        assert labels == list(contract.COCO80_LABELS), name


def test_detect_all_adds_one_output_set_per_fused_detector(repository):
    _, registry, configs = repository
    outputs = io(configs[contract.DETECT_ALL], "output")
    for d in registry.fused:
        for name in contract.detector_outputs(d.name):
            assert name in outputs
    assert contract.ALTERNATIVE_LABELS in outputs
    assert len(outputs) == 3 * (1 + len(registry.fused)) + 1


def test_detect_all_has_only_the_fused_detectors_and_the_union_of_their_labels(own_registry):
    configs = parse_repository(TARGETS["cpu"], own_registry)
    detect_all = configs[contract.DETECT_ALL]
    assert [o.name for o in detect_all.output] == [
        contract.DETECTIONS,
        contract.NUM_DETECTIONS,
        contract.ANNOTATED_IMAGE,
        contract.ALTERNATIVE_LABELS,
        *contract.detector_outputs("parts"),
        *contract.detector_outputs("pets"),
    ]
    # parts' labels in their order, then what pets adds
    labels = json.loads(parameter(detect_all, contract.LABELS_PARAMETER))
    assert labels == ["bolt", "nut", "dog", "cat"]
    steps = {s.model_name for s in detect_all.ensemble_scheduling.step}
    assert "coco" not in steps and "parts" in steps and "pets" in steps
    # the unfused detector still has its own ensemble
    assert configs["detect_coco"].platform == "ensemble"
    # the fusion step knows each member's own labels, to map its class ids by name
    fuse = configs["fuse_detections"]
    assert json.loads(parameter(fuse, "labels")) == labels
    assert json.loads(parameter(fuse, "detectors")) == [
        {"name": "parts", "labels": ["bolt", "nut", "dog"]},
        {"name": "pets", "labels": ["cat", "dog"]},
    ]


def test_a_models_file_with_nothing_fused_has_no_detect_all(tmp_path):
    text = OWN_MODELS.replace('family = "yolo"', 'family = "yolo"\nfuse = false')
    text = text.replace('family = "centernet"', 'family = "centernet"\nfuse = false')
    registry = load_models(write_models(tmp_path, text, OWN_FILES))
    assert registry.fused == ()
    configs = parse_repository(TARGETS["cpu"], registry)
    assert contract.DETECT_ALL not in configs and "fuse_detections" not in configs
    assert {"detect_parts", "detect_pets", "detect_coco"} <= set(configs)


def test_ensemble_wiring_maps_only_existing_tensors_with_matching_types(repository):
    target, registry, configs = repository
    for name in registry.ensembles:
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
    _, registry, configs = repository
    for name in registry.ensembles:
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


def test_steps_rebuild_their_family_from_their_parameters(repository):
    _, registry, configs = repository
    for d in registry.detectors:
        for step in (f"preprocess_{d.name}", f"postprocess_{d.name}"):
            config = configs[step]
            assert parameter(config, "family") == d.family_ref
            assert json.loads(parameter(config, "labels")) == list(d.labels)
            assert json.loads(parameter(config, "options")) == dict(d.options)


def detector_configs(configs, registry: Registry) -> list[mc.ModelConfig]:
    return [configs[d.name] for d in registry.detectors]


def test_detectors_batch_dynamically_and_warm_up(repository):
    _, registry, configs = repository
    for config in detector_configs(configs, registry):
        assert config.dynamic_batching.preferred_batch_size
        assert max(config.dynamic_batching.preferred_batch_size) <= config.max_batch_size
        # a YOLO's output size is open, its input is not: it warms up too
        assert len(config.model_warmup) == 1


def test_a_detector_takes_its_batching_and_instances_from_the_models_file(own_registry):
    for target, groups in (("cpu", 1), ("gpu", 4)):
        coco = parse_repository(TARGETS[target], own_registry)["coco"]
        assert list(coco.dynamic_batching.preferred_batch_size) == [2]
        assert coco.dynamic_batching.max_queue_delay_microseconds == 500
        assert [g.count for g in coco.instance_group] == [3] * groups
    parts = parse_repository(TARGETS["cpu"], own_registry)["parts"]
    # a native detector's count is its backend's on the CPU (configgen.NATIVE_CPU)
    native_count = configgen.NATIVE_CPU["throughput"]["pytorch"].instances
    assert [g.count for g in parts.instance_group] == [native_count]
    on_runner = parse_repository(configgen.make_target("cpu", native=frozenset()), own_registry)
    assert [g.count for g in on_runner["parts"].instance_group] == [
        TARGETS["cpu"].detector_instances
    ]
    # no wait for a batch to fill unless the models file asks for one
    assert parts.dynamic_batching.max_queue_delay_microseconds == 0


def test_a_family_option_sets_the_detector_tensors(own_registry):
    parts = parse_repository(TARGETS["cpu"], own_registry)["parts"]
    assert [list(t.dims) for t in parts.input] == [[3, 320, 320]]
    assert [list(t.dims) for t in parts.output] == [[4 + 3, -1]]  # three labels


def test_cpu_target_runs_each_artifact_natively_and_the_steps_in_python(own_registry):
    for registry in (REGISTRIES["committed"], own_registry):
        configs = parse_repository(TARGETS["cpu"], registry)
        detectors = {d.name for d in registry.detectors}
        for config in configs.values():
            if config.platform == "ensemble":
                continue
            assert all(g.kind == mc.ModelInstanceGroup.KIND_CPU for g in config.instance_group)
            if config.name not in detectors:
                assert config.backend == "python", config.name
    configs = parse_repository(TARGETS["cpu"], REGISTRIES["committed"])
    assert configs["pytorch"].platform == "pytorch_libtorch"
    assert configs["tensorflow"].platform == "tensorflow_savedmodel"
    assert configs["onnxruntime"].platform == "onnxruntime_onnx"
    files = configgen.render(TARGETS["cpu"], REGISTRIES["committed"])
    for name in ("pytorch", "tensorflow", "onnxruntime"):
        assert f"{name}/1/model.py" not in files  # no Python runner behind a native model
        assert not configs[name].backend


def test_a_backend_not_built_here_keeps_its_runtime_on_the_python_runner():
    target = configgen.make_target("cpu", native=frozenset({"pytorch", "onnxruntime"}))
    configs = parse_repository(target, REGISTRIES["committed"])
    tf = configs["tensorflow"]
    assert tf.backend == "python" and not tf.platform
    assert parameter(tf, "runtime") == "savedmodel"
    reason = parameter(tf, "python_runner_reason")
    assert reason == "the tensorflow backend is not built on this machine"
    assert configs["pytorch"].platform == "pytorch_libtorch"
    # what a client reads: the backend of each detector, in the ensembles' parameters
    backends = {
        d["name"]: d["backend"]
        for d in json.loads(parameter(configs["detect_all"], contract.DETECTORS_PARAMETER))
    }
    assert backends == {
        "pytorch": "pytorch_libtorch", "tensorflow": "python", "onnxruntime": "onnxruntime_onnx"
    }  # fmt: skip
    nothing = parse_repository(configgen.make_target("cpu", native=frozenset()))
    assert all(nothing[d.name].backend == "python" for d in REGISTRIES["committed"].detectors)


def test_native_false_in_the_models_file_keeps_a_detector_on_its_python_runner(tmp_path):
    text = OWN_MODELS.replace('name = "coco"', 'name = "coco"\nnative = false')
    registry = load_models(write_models(tmp_path, text, OWN_FILES))
    coco = parse_repository(TARGETS["cpu"], registry)["coco"]
    assert coco.backend == "python"
    assert parameter(coco, "python_runner_reason") == "native = false in the models file"
    assert parse_repository(TARGETS["ngc"], registry)["coco"].backend == "python"


# The only fields in which a detector's native config may differ between the cpu and ngc
# targets: where its instances run, each backend's thread settings, and the batch sizes
# its dynamic batcher prefers (ONNX Runtime runs one image at a time on a CPU).
TARGET_SPECIFIC_FIELDS = {"instance_group", "parameters", "dynamic_batching"}


def without_target_specific_fields(config: mc.ModelConfig) -> mc.ModelConfig:
    config = mc.ModelConfig.FromString(config.SerializeToString())
    del config.instance_group[:]
    config.parameters.clear()
    del config.dynamic_batching.preferred_batch_size[:]
    return config


@pytest.mark.parametrize("models", ["committed", "own"])
@pytest.mark.parametrize("profile", configgen.CPU_PROFILES)
def test_cpu_and_ngc_write_the_same_native_config_but_instances_and_threads(
    models, profile, own_registry
):
    registry = own_registry if models == "own" else REGISTRIES[models]
    cpu = parse_repository(configgen.make_target("cpu", profile=profile), registry)
    ngc = parse_repository(TARGETS["ngc"], registry)
    compared = 0
    for d in registry.detectors:
        if not cpu[d.name].platform:
            assert not ngc[d.name].platform, d.name  # the same artifact, the same verdict
            continue
        fields = {f.name for f, _ in cpu[d.name].ListFields()} | {
            f.name for f, _ in ngc[d.name].ListFields()
        }
        differ = {
            f for f in fields if getattr(cpu[d.name], f) != getattr(ngc[d.name], f)
        }  # fmt: skip
        assert differ <= TARGET_SPECIFIC_FIELDS, (d.name, differ)
        assert "instance_group" in differ
        # and within dynamic_batching, only the preferred batch sizes
        assert without_target_specific_fields(cpu[d.name]) == without_target_specific_fields(
            ngc[d.name]
        ), d.name
        compared += 1
    assert compared >= 2


def test_the_cpu_profiles_trade_threads_per_instance_for_instances():
    registry = REGISTRIES["committed"]
    throughput = parse_repository(configgen.make_target("cpu"), registry)
    latency = parse_repository(configgen.make_target("cpu", profile="latency"), registry)
    assert parameter(throughput["pytorch"], "INTRA_OP_THREAD_COUNT") == "1"
    assert [g.count for g in throughput["pytorch"].instance_group] == [2]
    assert parameter(latency["pytorch"], "INTRA_OP_THREAD_COUNT") == "2"
    assert [g.count for g in latency["pytorch"].instance_group] == [1]
    assert parameter(throughput["onnxruntime"], "intra_op_thread_count") == "1"
    assert list(throughput["onnxruntime"].dynamic_batching.preferred_batch_size) == [1]
    assert list(latency["onnxruntime"].dynamic_batching.preferred_batch_size) == [4, 8]
    with pytest.raises(ValueError, match="throughput, latency"):
        configgen.make_target("cpu", profile="fast")


def test_a_models_files_batch_sizes_win_over_the_backends(tmp_path):
    text = """
[[detector]]
name = "c"
runtime = "onnx"
recipe = "centernet_mobilenetv3"
family = "centernet"
preferred_batch_sizes = [2]
"""
    registry = load_models(write_models(tmp_path, text, {}))
    config = parse_repository(TARGETS["cpu"], registry)["c"]
    assert list(config.dynamic_batching.preferred_batch_size) == [2]


def test_gpu_target_gives_every_detector_one_instance_group_per_gpu():
    registry = REGISTRIES["committed"]
    configs = parse_repository(TARGETS["gpu"], registry)
    for config in detector_configs(configs, registry):
        groups = config.instance_group
        assert [list(g.gpus) for g in groups] == [[0], [1], [2], [3]], config.name
        assert all(g.kind == mc.ModelInstanceGroup.KIND_GPU for g in groups)
        assert config.backend == "python"
        assert "Python runners" in parameter(config, "python_runner_reason")


def test_gpu_target_takes_any_gpu_list():
    registry = REGISTRIES["committed"]
    configs = parse_repository(configgen.make_target("gpu", (2, 5)), registry)
    for config in detector_configs(configs, registry):
        assert [list(g.gpus) for g in config.instance_group] == [[2], [5]]


def test_ngc_target_runs_every_bundled_detector_natively_on_every_gpu():
    configs = parse_repository(TARGETS["ngc"], REGISTRIES["committed"])
    by_name = {d.name: configs[d.name] for d in REGISTRIES["committed"].detectors}
    assert by_name["pytorch"].platform == "pytorch_libtorch"
    assert by_name["pytorch"].default_model_filename == "model.pt"
    assert by_name["tensorflow"].platform == "tensorflow_savedmodel"
    assert by_name["tensorflow"].default_model_filename == "model.savedmodel"
    assert by_name["onnxruntime"].platform == "onnxruntime_onnx"
    assert by_name["onnxruntime"].default_model_filename == "model.onnx"
    for config in by_name.values():
        assert len(config.instance_group) == 4
        assert "runtime" not in config.parameters  # no runner parameters
    files = configgen.render(TARGETS["ngc"], REGISTRIES["committed"])
    assert not [f for f in files if f.split("/")[0] in by_name and f.endswith("model.py")]


def test_a_users_torchscript_is_bound_by_libtorchs_index_names(own_registry):
    """YOLO's family calls its tensors images / output0; libtorch binds a TorchScript's
    forward arguments and returned tuple by position, through NAME__index names."""
    for target in ("cpu", "ngc"):
        files = configgen.render(TARGETS[target], own_registry)
        configs = parse_repository(TARGETS[target], own_registry)
        parts = configs["parts"]
        assert parts.platform == "pytorch_libtorch"
        assert [t.name for t in parts.input] == ["INPUT__0"]
        assert [t.name for t in parts.output] == ["OUTPUT__0"]
        assert "parts/1/model.py" not in files
        steps = {s.model_name: s for s in configs["detect_parts"].ensemble_scheduling.step}
        assert dict(steps["parts"].input_map) == {"INPUT__0": "parts_preprocessed"}
        assert dict(steps["parts"].output_map) == {"OUTPUT__0": "parts_raw_output0"}
        assert steps["postprocess_parts"].input_map["output0"] == "parts_raw_output0"
        # a user's Python model always runs in the Python backend
        assert configs["pets"].backend == "python"
        assert parameter(configs["pets"], "runtime") == "python"


def test_a_python_model_imports_from_its_models_file_folder(own_registry):
    pets = parse_repository(TARGETS["cpu"], own_registry)["pets"]
    folder = str(own_registry.source.parent)
    assert json.loads(parameter(pets, "search_path")) == [folder]
    assert parameter(pets, "artifact") == "user_model.py"
    # the bundled detectors depend on no folder of the machine that generated them
    for config in parse_repository(TARGETS["cpu"]).values():
        assert "search_path" not in config.parameters, config.name


def test_unknown_target_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="cpu, gpu, ngc"):
        configgen.make_target("tpu")


def test_committed_model_repository_matches_the_spec():
    assert configgen.stale_files() == [], "run `python -m ensemble.configgen --update`"


def test_docker_compose_pins_an_image_that_has_the_tensorflow_backend():
    compose = (configgen.REPO_ROOT / "docker-compose.yml").read_text()
    dockerfile = (configgen.REPO_ROOT / "deploy" / "images" / "ngc.Dockerfile").read_text()
    assert f"ARG TRITON_IMAGE={configgen.NGC_IMAGE}\n" in dockerfile
    assert "dockerfile: deploy/images/ngc.Dockerfile" in compose
    assert "count: 4" in compose or "device_ids" in compose


@pytest.fixture
def stand_in_builds(tmp_path, monkeypatch) -> Path:
    """A models directory holding stand-ins for the three recipes' build outputs."""
    models = tmp_path / "models"
    for recipe, (artifact, runtime, _) in recipes.RECIPES.items():
        path = models / recipe / artifact
        if runtime == "savedmodel":
            path.mkdir(parents=True)
            (path / "saved_model.pb").write_bytes(b"graph of " + recipe.encode())
            (path / "variables").mkdir()
            (path / "variables" / "variables.index").write_bytes(b"weights")
        else:
            path.parent.mkdir(parents=True)
            path.write_bytes(b"weights of " + recipe.encode() * 1000)
    monkeypatch.setenv(recipes.MODELS_DIR_ENV, str(models))
    return models


def test_gpu_repository_links_and_ngc_repository_copies_the_built_artifacts(
    tmp_path, stand_in_builds
):
    registry = REGISTRIES["committed"]
    gpu = configgen.write_repository(TARGETS["gpu"], tmp_path / "gpu", registry)
    ngc = configgen.write_repository(
        TARGETS["ngc"], tmp_path / "ngc", registry, copy_artifacts=True
    )
    for d in registry.detectors:
        built = stand_in_builds / d.recipe / recipes.RECIPES[d.recipe][0]
        linked = gpu / d.name / "1" / d.runtime_info.link_name
        copied = ngc / d.name / "1" / d.runtime_info.link_name
        assert linked.is_symlink() and linked.resolve() == built.resolve()
        # A container mounts the folder: links pointing outside it would dangle there.
        assert copied.exists() and not copied.is_symlink()
    model_pt = ngc / "pytorch" / "1" / "model.pt"
    assert model_pt.read_bytes() == (stand_in_builds / "nanodet_m" / "model.pt").read_bytes()
    savedmodel = ngc / "tensorflow" / "1" / "model.savedmodel"
    assert (savedmodel / "variables" / "variables.index").read_bytes() == b"weights"
    assert not any(p.is_symlink() for p in savedmodel.rglob("*"))


def test_a_users_artifact_is_linked_under_the_name_its_runtime_expects(tmp_path, own_registry):
    out = configgen.write_repository(TARGETS["cpu"], tmp_path / "repo", own_registry)
    folder = own_registry.source.parent
    assert (out / "parts" / "1" / "model.pt").resolve() == folder / "parts.torchscript"
    assert (out / "pets" / "1" / "user_model.py").resolve() == folder / "pets_model.py"


def test_repository_without_built_models_says_how_to_build_them(tmp_path, monkeypatch):
    monkeypatch.setenv(recipes.MODELS_DIR_ENV, str(tmp_path / "no-models"))
    with pytest.raises(FileNotFoundError, match="make models"):
        configgen.write_repository(TARGETS["cpu"], tmp_path / "repo", REGISTRIES["committed"])
    assert not (tmp_path / "repo").exists(), "nothing is written before the check"
