"""A replica added while clients run gets their traffic: the front closes each gRPC
connection once it is ``--grpc-max-connection-age`` old (a graceful GOAWAY), and the
client reconnects, resolves the name again and balances over the new addresses.

It runs the way a cluster does: the client's target is a DNS name (a headless
Service's), served here by a small DNS server of the test's own whose answer grows
from one replica's address to two, as Kubernetes' does when the HPA adds a pod. The
replicas are two real launchers on the same port of 127.0.0.1 and 127.0.0.2.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from client.api import DetectorClient
from ensemble.processes import Ports, free_port

pytestmark = [pytest.mark.server, pytest.mark.slow]

MODEL = "detect_pytorch"  # one detector: the cheapest ensemble to serve
MAX_AGE_S = 3
# gRPC's DNS resolver resolves a name at most once in this long
# (grpc.dns_min_time_between_resolutions_ms, whose default the client keeps), so a
# connection closed sooner waits for it; with the default age of 120 s it never does.
DNS_MIN_INTERVAL_S = 30
MARGIN_S = 10
NAME = "replicas.test"


class Dns:
    """A DNS server on a loopback UDP port answering A queries for :data:`NAME` with
    ``addresses`` (TTL 0) and every other query with no answer."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                query, peer = self.sock.recvfrom(512)
            except OSError:  # closed
                return
            self.sock.sendto(self._answer(query), peer)

    def _answer(self, query: bytes) -> bytes:
        (qid,) = struct.unpack("!H", query[:2])
        end, labels = 12, []
        while query[end]:
            labels.append(query[end + 1 : end + 1 + query[end]].decode())
            end += 1 + query[end]
        qtype, _ = struct.unpack("!HH", query[end + 1 : end + 5])
        question = query[12 : end + 5]
        records = list(self.addresses) if qtype == 1 and ".".join(labels) == NAME else []
        # response, recursion desired and available, NOERROR; one question
        head = struct.pack("!HHHHHH", qid, 0x8180, 1, len(records), 0, 0)
        answers = b"".join(
            struct.pack("!HHHIH", 0xC00C, 1, 1, 0, 4) + socket.inet_aton(a) for a in records
        )
        return head + question + answers

    def close(self) -> None:
        self.sock.close()


def served(server) -> int:
    """Requests for :data:`MODEL` that ``server`` answered, from its Prometheus metrics."""
    url = f"http://{server.config.host}:{server.config.ports.metrics}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    prefix = f'nv_inference_request_success{{model="{MODEL}",'
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith(prefix))  # fmt: skip


def test_a_replica_added_while_clients_run_gets_their_traffic(photos, tmp_path: Path):
    from ensemble.server import running_server

    grpc_port = free_port()
    ports = {
        host: Ports(http=free_port(host), grpc=grpc_port, metrics=free_port(host),
                    supervisor=free_port(host))
        for host in ("127.0.0.1", "127.0.0.2")
    }  # fmt: skip
    options = {"load": (MODEL,), "grpc_max_connection_age_s": MAX_AGE_S}
    dns = Dns(["127.0.0.1"])
    failures: list[BaseException] = []
    answered = 0
    done = threading.Event()
    with running_server(host="127.0.0.1", ports=ports["127.0.0.1"], workdir=tmp_path / "a",
                        **options) as first:  # fmt: skip
        client = DetectorClient(f"dns://127.0.0.1:{dns.port}/{NAME}:{grpc_port}")

        def drive() -> None:
            nonlocal answered
            while not done.is_set():
                try:
                    client.detect([photos["coffee"]], model=MODEL)
                except Exception as e:  # noqa: BLE001 - every failure is counted
                    failures.append(e)
                else:
                    answered += 1

        drivers = [threading.Thread(target=drive) for _ in range(2)]
        for t in drivers:
            t.start()
        try:
            with running_server(host="127.0.0.2", ports=ports["127.0.0.2"],
                                workdir=tmp_path / "b", **options) as second:  # fmt: skip
                dns.addresses = ["127.0.0.1", "127.0.0.2"]  # the new pod's endpoint
                added = time.monotonic()
                limit = added + max(MAX_AGE_S, DNS_MIN_INTERVAL_S) + MARGIN_S
                while served(second) == 0 and time.monotonic() < limit and not failures:
                    time.sleep(0.2)
                both_after = time.monotonic() - added
                # the first replica keeps its share: connections are balanced, not moved
                before = served(first)
                time.sleep(2 * MAX_AGE_S)
                first_later, second_later = served(first), served(second)
        finally:
            done.set()
            for t in drivers:
                t.join()
            client.close()
            dns.close()
    print(f"both replicas served {both_after:.1f} s after the second was added "
          f"(max age {MAX_AGE_S} s); {answered} answered, {len(failures)} failed")  # fmt: skip
    assert failures == []
    assert second_later > 0, f"the added replica got no request in {both_after:.0f} s"
    assert first_later > before
