"""The server under abuse, against the real Triton and its front: output subsets of
detect_all, oversized requests, overload, worker crashes, restricted APIs, TLS and a
draining stop.

Tests that change the server (crashes, restricted APIs, TLS, stopping) start their
own, with only ``detect_pytorch`` loaded to keep them short.
"""

from __future__ import annotations

import json
import math
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
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from bench import soak
from bench.load import ANSWERED, REFUSED, Load, grpc
from client import DetectorClient, DetectorError
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
def test_a_crash_costs_the_client_library_nothing_and_others_are_told_to_retry(
    recovering_server, photos
):
    """While a model is brought back, the front refuses it UNAVAILABLE with a retry hint
    (not Triton's NOT_FOUND, "no available versions"), readiness says no within 0.5 s
    of the death, and the client library's requests, retried, all succeed."""
    server, _ = recovering_server
    stop, failures, answers, stats = threading.Event(), [], Counter(), Counter()

    def clients() -> None:
        with DetectorClient(server.grpc_url) as client:
            while not stop.is_set():
                try:
                    outcome = client.detect([photos["horse"]], model="detect_pytorch")[0]
                except DetectorError as e:
                    outcome = e
                if isinstance(outcome, Exception):
                    failures.append(repr(outcome))
                else:
                    answers[time.monotonic() > killed_at] += 1
            for s in client.endpoint_stats().values():
                stats.update(recovering=s.recovering, busy=s.busy)

    threads = [threading.Thread(target=clients) for _ in range(4)]
    killed_at = math.inf
    for thread in threads:
        thread.start()
    try:
        while answers[False] < 8:  # the clients are under way
            time.sleep(0.05)
        killed_at = time.monotonic()
        assert kill_workers(server, "preprocess_pytorch")
        while ready(server.http_url) == 200 and time.monotonic() - killed_at < 5:
            time.sleep(0.01)
        not_ready_after = time.monotonic() - killed_at
        # Asked while the model is away: a raw gRPC client naming the model, and HTTP.
        raw = grpcclient.InferenceServerClient(server.grpc_url)
        with pytest.raises(InferenceServerException) as refused:
            raw.infer("detect_pytorch", image_inputs([photos["horse"]]),
                      headers={contract.MODEL_HEADER: "detect_pytorch"})  # fmt: skip
        http = urllib.request.Request(
            server.http_url + "/v2/models/detect_pytorch/infer", data=b"{}", method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as http_refused:
            urllib.request.urlopen(http, timeout=10)
        assert ready(server.http_url, "/v2/models/preprocess_pytorch/ready") == 400
        while ready(server.http_url) != 200 and time.monotonic() - killed_at < 60:
            time.sleep(0.05)
        back_after = time.monotonic() - killed_at
        answered_before = answers[True]
        while answers[True] < answered_before + 8:  # served again, by the same clients
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    print(f"not ready {not_ready_after:.2f} s after the kill, ready again after "
          f"{back_after:.1f} s; {sum(answers.values())} answered, {len(failures)} failed, "
          f"{stats['recovering']} refusals retried")  # fmt: skip
    assert not_ready_after <= 0.5
    assert refused.value.status() == "StatusCode.UNAVAILABLE"
    assert contract.RECOVERING_MESSAGE in refused.value.message()
    assert http_refused.value.code == 503
    assert http_refused.value.headers["Retry-After"] == str(contract.RECOVERY_RETRY_S)
    assert contract.RECOVERING_MESSAGE in http_refused.value.read().decode()
    assert failures == []
    assert stats["recovering"] >= 1  # the clients met the recovery, and rode it out


@pytest.mark.slow
def test_a_soak_with_a_kill_at_16_clients_reports_no_failure_and_the_refusals_apart(
    recovering_server,
):
    """``bench.soak`` counts requests as the client library's callers see them: a
    worker's death at 16 clients costs them nothing; the server's refusals that the
    library sent again are reported apart."""
    server, _ = recovering_server
    result = soak.soak(
        server.grpc_url, 8.0, 16, server_pids=server.pids, kill="postprocess_pytorch",
        kill_at_s=2.0, http_url=server.http_url,
    )  # fmt: skip
    print(soak.format_report(result))
    kill = result["kill"]
    assert kill["workers_killed"] and kill["answer_recovery_s"] is not None, result
    assert result["failed"] == 0 and result["refused"] == 0, result["failures"]
    assert result["answered"] == result["sent"] > 0
    assert result["server_refusals"]["recovering"] >= 1
    assert kill["ready_went_down_after_s"] <= 0.5
    assert "refusals the client library sent again" in soak.format_report(result)


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


@pytest.mark.slow
def test_a_model_that_cannot_come_back_fails_liveness_until_it_does(tmp_path, capfd):
    """After ``reload_attempts`` failed reloads /v2/health/live says no, for a kubelet
    to restart the pod; a reload that then works makes it live again. The server runs
    with ``log_stdout``: Triton's log reaches stdout (a container's log) and its file."""
    with running_server(
        workdir=tmp_path, load=("detect_pytorch",), reload_attempts=1, log_stdout=True
    ) as server:
        loaded = "successfully loaded 'postprocess_pytorch'"
        assert loaded in capfd.readouterr().out
        assert loaded in server.config.log_path.read_text()
        assert ready(server.http_url, "/v2/health/live") == 200
        model = server.config.repository / "postprocess_pytorch"
        hidden = tmp_path / "hidden"
        model.rename(hidden)  # its reload fails: Triton finds no such model
        killed_at = time.monotonic()
        assert kill_workers(server, "postprocess_pytorch")
        while ready(server.http_url, "/v2/health/live") == 200:
            assert time.monotonic() - killed_at < 30, "still live 30 s after a failed reload"
            time.sleep(0.1)
        not_live_after = time.monotonic() - killed_at
        assert ready(server.http_url) == 400
        hidden.rename(model)
        while ready(server.http_url, "/v2/health/live") != 200:
            assert time.monotonic() - killed_at < 60, "not live again after the model came back"
            time.sleep(0.1)
        assert ready(server.http_url) == 200
        print(f"not live {not_live_after:.1f} s after the kill; live again after "
              f"{time.monotonic() - killed_at:.1f} s")  # fmt: skip


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
    # The key is not on tritonserver's command line (any user's `ps` reads that): the
    # front checks it, and only its config, readable by this user alone, holds it.
    assert not any("test-key-123" in arg for arg in psutil.Process(server.process.pid).cmdline())
    config = server.front.workdir / "nginx.conf"
    assert "test-key-123" in config.read_text()
    assert config.stat().st_mode & 0o777 == 0o600
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
