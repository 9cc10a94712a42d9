"""``python -m ui``: the web demo, on any Triton or on one it starts itself.

    python -m ui                          # Triton at $TRITON_URL or localhost:8001
    python -m ui --url gpu-host:8001      # any Triton that serves the ensembles
    python -m ui --serve                  # start the embedded CPU Triton first (make demo)

Prints one line, ``demo: http://127.0.0.1:7860 (Triton gRPC 127.0.0.1:8001)``; Ctrl-C or
SIGTERM stops the page and, with ``--serve``, Triton. Gradio's files (uploads) go to a
temporary directory of this process, deleted at exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from client.api import URL_ENV  # not at the top: see main()

    ap = argparse.ArgumentParser(
        prog="python -m ui",
        description="The web demo, on any Triton or on one it starts itself.",
    )
    ap.add_argument(
        "--url", help=f"Triton gRPC address host:port (default ${URL_ENV} or localhost:8001)"
    )
    ap.add_argument("--host", default="127.0.0.1", help="address the page listens on")
    ap.add_argument("--port", type=int, default=7860, help="port of the page")
    ap.add_argument(
        "--serve", action="store_true", help="start the embedded CPU Triton first (localhost)"
    )
    ap.add_argument("--http-port", type=int, default=8000, help="with --serve: Triton's HTTP")
    ap.add_argument("--grpc-port", type=int, default=8001, help="with --serve: Triton's gRPC")
    ap.add_argument("--metrics-port", type=int, default=8002, help="with --serve: metrics")
    args = ap.parse_args(argv)
    if args.serve and args.url:
        ap.error("--url points at a running Triton, --serve starts one: give one of them")
    return args


def main(argv: list[str] | None = None) -> int:
    # Handlers first: importing gradio, grpc and the rest takes seconds, and Ctrl-C in
    # those seconds should stop us as cleanly as later.
    stop = threading.Event()
    stopped_by: list[str] = []

    def on_signal(signum, _frame):
        # Only flag here; the main thread stops everything in order.
        stopped_by.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    for noisy in ("httpx", "gradio"):  # one line per request is ours to log, not theirs
        logging.getLogger(noisy).setLevel(logging.WARNING)

    # Gradio reads GRADIO_TEMP_DIR when the page is built: point it at a directory of
    # ours so the uploads it keeps (swept by the app's delete_cache) go away with us.
    temp_dir = tempfile.mkdtemp(prefix="detector-ui-")
    os.environ["GRADIO_TEMP_DIR"] = temp_dir
    # Gradio's queue keeps a record of its last N events (10000 by default) and
    # summarises them after every event; a shorter window keeps both small.
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")
    server = None
    try:
        if args.serve:
            server = start_triton(args, stop)
            if server is None:
                return 0 if stop.is_set() else 2
            url = server.grpc_url
        else:
            from client.api import resolve_url

            url = resolve_url(args.url)
        return run_ui(args, url, server, stop, stopped_by)
    finally:
        if server is not None:
            code = server.stop()
            print(f"Triton stopped (exit code {code})", flush=True)
        shutil.rmtree(temp_dir, ignore_errors=True)


def start_triton(args: argparse.Namespace, stop: threading.Event):
    """The embedded CPU server, started and ready; None when it failed or was stopped."""
    from ensemble.server import Ports, ServerError, TritonServer, prepare_repository

    try:
        repository = prepare_repository("cpu")
        server = TritonServer(
            repository, "127.0.0.1", Ports(args.http_port, args.grpc_port, args.metrics_port)
        )
        print(f"starting Triton on {repository} (log: {server.log_path})", flush=True)
        server.start()
    except (ServerError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return None
    # wait_ready() polls; run it aside so that Ctrl-C during the load stops at once.
    failure: list[Exception] = []
    ready = threading.Event()

    def wait() -> None:
        try:
            server.wait_ready()
        except ServerError as e:
            failure.append(e)
        finally:
            ready.set()

    threading.Thread(target=wait, name="triton-wait-ready", daemon=True).start()
    while not (ready.wait(0.2) or stop.is_set()):
        pass
    if stop.is_set() or failure:
        if failure:
            print(f"error: {failure[0]}", file=sys.stderr)
        code = server.stop()
        if stop.is_set():
            print(f"stopped while loading; Triton stopped (exit code {code})", flush=True)
        return None
    return server


def run_ui(args, url: str, server, stop: threading.Event, stopped_by: list[str]) -> int:
    from client import DetectorClient
    from ui.app import LAUNCH_OPTIONS, build_app

    client = DetectorClient(url)
    app = build_app(client)
    try:
        app.launch(
            server_name=args.host,
            server_port=args.port,
            prevent_thread_lock=True,
            quiet=True,
            **LAUNCH_OPTIONS,
        )
    except OSError as e:
        print(f"error: cannot serve the page on {args.host}:{args.port}: {e}", file=sys.stderr)
        client.close()
        return 2
    print(f"demo: http://{args.host}:{args.port} (Triton gRPC {url})", flush=True)
    code = 0
    try:
        while not stop.wait(1.0):
            if server is not None and server.process.poll() is not None:
                print(
                    f"tritonserver exited with code {server.process.returncode}; "
                    f"see {server.log_path}",
                    file=sys.stderr,
                )
                code = 1
                break
    finally:
        if stopped_by:
            print(f"{stopped_by[0]}: stopping", flush=True)
        app.close()
        client.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
