"""The server under abuse, against the real Triton and its front: output subsets of
detect_all, oversized requests, overload, worker crashes, restricted APIs, TLS and a
draining stop.

Tests that change the server (crashes, restricted APIs, TLS, stopping) start their
own, with only ``detect_pytorch`` loaded to keep them short.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from bench.load import ANSWERED, REFUSED, Load, grpc
from ensemble import contract
from ensemble.front import Tls
from ensemble.processes import Ports, free_port
from ensemble.server import EXIT_TIMEOUT_S, running_server
from ensemble.supervisor import workers
from tests.inference import image_inputs
from tests.tls import make_self_signed

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent
OVERSIZED = 300 * 2**20


def ready(url: str, path: str = "/v2/health/ready", headers: dict | None = None) -> int:
    request = urllib.request.Request(url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


# --- detect_all: any subset of its outputs ------------------------------------------


def all_outputs() -> list[str]:
    names = [contract.DETECTIONS, contract.NUM_DETECTIONS, contract.ANNOTATED_IMAGE]
    for d in ("pytorch", "tensorflow", "onnxruntime"):
        names += contract.detector_outputs(d)
    return names


SUBSETS = {
    "fused alone": [contract.DETECTIONS, contract.NUM_DETECTIONS],
    "fused plus image": [contract.DETECTIONS, contract.NUM_DETECTIONS, contract.ANNOTATED_IMAGE],
    "one detector alone": list(contract.detector_outputs("tensorflow")),
    "one detector's detections only": list(contract.detector_outputs("pytorch")[:2]),
    "one drawn image only": [contract.detector_outputs("onnxruntime")[2]],
    "everything": all_outputs(),
}


@pytest.fixture(scope="module")
def everything(grpc, photos):
    return grpc.infer(contract.DETECT_ALL, image_inputs([photos["motorcycle_left"]]))


@pytest.mark.parametrize("subset", list(SUBSETS), ids=list(SUBSETS))
def test_detect_all_answers_a_subset_of_its_outputs_with_the_same_values(
    grpc, photos, everything, subset
):
    names = SUBSETS[subset]
    asked = [grpcclient.InferRequestedOutput(n) for n in names]
    result = grpc.infer(
        contract.DETECT_ALL, image_inputs([photos["motorcycle_left"]]), outputs=asked
    )
    got = {o.name for o in result.get_response().outputs}
    assert got == set(names)
    for name in names:
        if name.endswith(contract.ANNOTATED_IMAGE):  # a JPEG: the same drawing, re-encoded
            assert result.as_numpy(name)[0, 0][:2] == b"\xff\xd8"
        else:
            np.testing.assert_array_equal(result.as_numpy(name), everything.as_numpy(name))
    if contract.NUM_DETECTIONS in names:
        assert int(result.as_numpy(contract.NUM_DETECTIONS)[0, 0]) >= 1  # the motorcycle


# --- request size --------------------------------------------------------------------


def test_an_oversized_grpc_request_is_refused_and_the_next_is_served(triton_url, photos):
    client = grpcclient.InferenceServerClient(triton_url)
    big = image_inputs([b"\xff\xd8" + bytes(OVERSIZED)])
    started = time.monotonic()
    with pytest.raises(InferenceServerException) as refused:
        client.infer("detect_pytorch", big)
    seconds = time.monotonic() - started
    print(f"300 MiB over gRPC refused in {seconds:.2f} s: {refused.value}")
    assert refused.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "64 MiB" in refused.value.message()
    result = client.infer("detect_pytorch", image_inputs([photos["horse"]]))
    assert int(result.as_numpy(contract.NUM_DETECTIONS)[0, 0]) >= 1


def test_an_oversized_http_request_is_refused_before_its_body_is_read(triton_server, photos):
    if triton_server is None:
        pytest.skip("needs the server's HTTP address (not given by DETECTOR_TEST_URL)")
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", triton_server.config.ports.http, timeout=10)
    started = time.monotonic()
    # Only the headers: a front that waited for the body would time out here.
    conn.putrequest("POST", "/v2/models/detect_pytorch/infer")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Inference-Header-Content-Length", "0")
    conn.putheader("Content-Length", str(OVERSIZED))
    conn.endheaders()
    response = conn.getresponse()
    seconds = time.monotonic() - started
    assert response.status == 413
    assert "64 MiB" in json.loads(response.read())["error"]
    print(f"{OVERSIZED} bytes announced over HTTP refused in {seconds:.2f} s, body unsent")
    client = httpclient.InferenceServerClient(triton_server.http_url.split("://")[1])
    result = client.infer("detect_pytorch", image_inputs([photos["horse"]], protocol=httpclient))
    assert int(result.as_numpy(contract.NUM_DETECTIONS)[0, 0]) >= 1


# --- overload --------------------------------------------------------------------------


@pytest.mark.slow
def test_64_concurrent_clients_are_each_answered_or_told_the_server_is_busy(triton_url, photos):
    ensembles = ["detect_all", "detect_pytorch", "detect_tensorflow", "detect_onnxruntime"]
    load = Load(grpc(triton_url), ensembles, [photos["coffee"]], 64, requests=256).run()
    counts = Counter(r.outcome for r in load.records)
    slowest = max(r.seconds for r in load.records)
    print(f"64 clients, 256 requests: {dict(counts)}, slowest answer {slowest:.1f} s")
    assert set(counts) <= {ANSWERED, REFUSED}, load.figures()["failures"]
    assert counts[REFUSED] > 0  # the queues are bounded: some were refused
    assert counts[ANSWERED] > 0


# --- worker crashes ------------------------------------------------------------------


def logged_server(workdir: Path):
    """A server with only ``detect_pytorch`` loaded, and the lines its launcher and
    supervisor log."""
    lines: list[str] = []
    with running_server(workdir=workdir, load=("detect_pytorch",)) as server:
        server.log = lines.append
        if server.supervisor:
            server.supervisor.log = lines.append
        yield server, lines


@pytest.fixture
def own_server(tmp_path):
    yield from logged_server(tmp_path)


@pytest.fixture(scope="module")
def recovering_server(tmp_path_factory):
    """One server for the tests that kill a model's workers (each test another model's:
    they count its recoveries) and, after them, for the test of its stop."""
    yield from logged_server(tmp_path_factory.mktemp("recovering"))


def kill_workers(server, model: str) -> list[int]:
    pids = [pid for pid, m in workers(server.process.pid).items() if m == model]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def watch_until_served(server, image: bytes, seconds: float):
    """Requests one after another until one is answered after one failed (or ``seconds``
    passed), while another thread polls ``/v2/health/ready`` every 0.1 s. Returns the
    requests as (sent, done, answered) and the polls as (asked, answered, status), in
    seconds since the start."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    requests, polls, start = [], [], time.monotonic()
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.1):
            asked = time.monotonic() - start
            status = ready(server.http_url)
            polls.append((asked, time.monotonic() - start, status))

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        failed_once = False
        while time.monotonic() - start < seconds:
            sent = time.monotonic() - start
            try:
                client.infer("detect_pytorch", image_inputs([image]))
                ok = True
            except InferenceServerException:
                ok, failed_once = False, True
            requests.append((sent, time.monotonic() - start, ok))
            if ok and failed_once:
                break
            time.sleep(0.05)
    finally:
        done.set()
        poller.join()
    return requests, polls


@pytest.mark.slow
# Python-backend models of detect_pytorch (its detector runs in the native libtorch
# backend, inside tritonserver: tests/test_native.py kills that).
@pytest.mark.parametrize("model", ["postprocess_pytorch", "preprocess_pytorch"])
def test_a_model_whose_workers_all_die_serves_again_and_is_not_ready_meanwhile(
    recovering_server, photos, model
):
    server, log = recovering_server
    logged_before = len(log)
    killed = kill_workers(server, model)
    assert killed
    requests, polls = watch_until_served(server, photos["horse"], 60)
    _, recovered_at, ok = requests[-1]
    print(f"{model}: {len(killed)} workers killed, serving again after {recovered_at:.1f} s")
    lines = log[logged_before:]  # this test's kill only
    assert ok, f"not serving 60 s after the crash: {lines}"
    # Readiness went down: Triton answers "not ready" (400), or keeps the probe
    # waiting while the model loads (a probe with a 1 s timeout reads that as down).
    failed = [(sent, end) for sent, end, ok in requests if not ok]
    down = [a for a, b, status in polls if status == 400 or b - a > 1.0]
    assert down, (polls, requests)
    # The supervisor sees a death within 0.2 s, and Triton's own check of a stub
    # takes a second: after that, readiness never said ready while a request failed.
    lying = [b for a, b, status in polls if status == 200 and any(
        max(sent, 1.5) <= b <= end for sent, end in failed)]  # fmt: skip
    assert not lying, (polls, requests)
    crash = [line for line in lines if line.startswith("worker crash")]
    back = [line for line in lines if line.startswith("recovered")]
    assert len(crash) == 1 and f"model {model!r}" in crash[0]
    assert len(back) == 1 and f"model {model!r}" in back[0]
    with urllib.request.urlopen(
        f"http://127.0.0.1:{server.config.ports.supervisor}/metrics", timeout=5
    ) as r:
        metrics = r.read().decode()
    assert f'triton_worker_crashes_total{{model="{model}"}} {float(len(killed))}' in metrics
    assert f'triton_model_recoveries_total{{model="{model}"}} 1.0' in metrics
    # the model's own readiness and its ensemble's are back too
    for name in (model, "detect_pytorch"):
        assert ready(server.http_url, f"/v2/models/{name}/ready") == 200


@pytest.mark.slow
def test_a_server_that_recovered_a_model_stops_cleanly(recovering_server, photos):
    server, log = recovering_server
    assert kill_workers(server, "postprocess_pytorch")
    requests, _ = watch_until_served(server, photos["horse"], 60)
    assert requests[-1][2], log
    # A request reached the dead worker: Triton holds that model version for good
    # (ensemble.supervisor), and its own stop would wait out its exit timeout for it.
    assert server.supervisor.held() >= 1
    started = time.monotonic()
    code = server.stop()
    seconds = time.monotonic() - started
    print(f"stopped {seconds:.1f} s after a recovery, exit code {code}")
    assert code == 0
    assert seconds < EXIT_TIMEOUT_S / 2
    assert "Exit timeout expired" not in server.config.log_path.read_text(errors="replace")


@pytest.mark.slow
def test_a_server_stops_cleanly_right_after_a_crash(own_server):
    server, _ = own_server
    assert kill_workers(server, "postprocess_pytorch")
    time.sleep(0.2)  # before the supervisor has brought it back
    started = time.monotonic()
    code = server.stop()
    seconds = time.monotonic() - started
    print(f"stopped {seconds:.1f} s after a crash, exit code {code}")
    assert code == 0
    assert seconds < 30


# --- restricted APIs and TLS ----------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A server with restricted APIs (a key file) and TLS (a certificate made here)."""
    folder = tmp_path_factory.mktemp("guarded")
    cert, key = make_self_signed(folder / "tls")
    key_file = folder / "api-key"
    key_file.write_text("test-key-123\n")
    with running_server(
        workdir=folder, load=("detect_pytorch",), api_key_file=key_file, tls=Tls(cert, key)
    ) as server:
        yield server, cert


def tls_client(server, cert: Path) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_url, ssl=True, root_certificates=str(cert))


def test_tls_client_is_served_and_a_plain_text_client_is_not(guarded, photos):
    server, cert = guarded
    result = tls_client(server, cert).infer("detect_pytorch", image_inputs([photos["horse"]]))
    assert int(result.as_numpy(contract.NUM_DETECTIONS)[0, 0]) >= 1
    plain = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException):
        plain.infer("detect_pytorch", image_inputs([photos["horse"]]), client_timeout=10)


def test_control_apis_need_the_key_and_inference_health_metadata_do_not(guarded, photos):
    server, cert = guarded
    client = tls_client(server, cert)
    assert client.is_server_ready()
    assert client.get_model_metadata("detect_pytorch").name == "detect_pytorch"
    assert client.get_model_config("detect_pytorch").config.name == "detect_pytorch"
    for refused in (
        lambda **h: client.get_model_repository_index(**h),
        lambda **h: client.unload_model("pytorch", **h),
        lambda **h: client.get_log_settings(**h),
        lambda **h: client.get_trace_settings(**h),
        lambda **h: client.get_inference_statistics(**h),
    ):
        with pytest.raises(InferenceServerException, match="restricted"):
            refused()
    index = client.get_model_repository_index(
        headers={contract.GRPC_API_KEY_HEADER: "test-key-123"}
    )
    assert "detect_pytorch" in {m.name for m in index.models}
    with pytest.raises(InferenceServerException, match="restricted"):
        client.get_model_repository_index(headers={contract.GRPC_API_KEY_HEADER: "wrong"})
    # over HTTPS the same
    context = __import__("ssl").create_default_context(cafile=str(cert))
    request = urllib.request.Request(server.http_url + "/v2/repository/index", method="POST")
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(request, timeout=10, context=context)
    assert denied.value.code in (401, 403)
    with urllib.request.urlopen(server.http_url + "/v2/health/ready", context=context) as r:
        assert r.status == 200
    # still serving
    result = client.infer("detect_pytorch", image_inputs([photos["horse"]]))
    assert int(result.as_numpy(contract.NUM_DETECTIONS)[0, 0]) >= 1


# --- stopping drains ------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_under_load_loses_no_accepted_request_and_stops_in_the_grace_period(
    tmp_path, photos
):
    ports = Ports(free_port(), free_port(), free_port(), free_port())
    launcher = subprocess.Popen(
        [sys.executable, "-m", "ensemble.server", "--http-port", str(ports.http),
         "--grpc-port", str(ports.grpc), "--metrics-port", str(ports.metrics),
         "--supervisor-port", str(ports.supervisor)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    load = Load(grpc(f"127.0.0.1:{ports.grpc}"), ["detect_tensorflow", "detect_all"],
                [photos["coffee"]], 8)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while ready(f"http://127.0.0.1:{ports.http}") != 200:
            assert launcher.poll() is None, launcher.stdout.read()
            assert time.monotonic() < deadline
            time.sleep(0.5)
        with load:
            while load.count(ANSWERED) < 8:  # the server is under load
                assert load.elapsed() < 120, load.figures()
                time.sleep(0.1)
            stop_at = load.elapsed()
            launcher.send_signal(signal.SIGTERM)
            code = launcher.wait(60)
            stopped_in = load.elapsed() - stop_at
            time.sleep(max(0.0, stop_at + 5 - load.elapsed()))  # the clients go on sending
    finally:
        if launcher.poll() is None:
            launcher.kill()
    before = [r for r in load.records if r.start < stop_at - 0.05]
    lost = [r for r in before if r.outcome != ANSWERED]
    in_flight = [r for r in before if r.end > stop_at]
    print(
        f"SIGTERM with {len(in_flight)} requests in flight: {len(before) - len(lost)} of "
        f"{len(before)} sent before it answered; stopped in {stopped_in:.1f} s, code {code}"
    )
    assert in_flight  # the stop really came under load
    assert not lost, lost[:3]
    assert code == 0
    assert stopped_in < 30
