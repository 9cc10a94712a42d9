"""``python -m ui``: the web demo, on any Triton or on one it starts itself.

The page (``ui.app``) knows only the public contract and learns everything else from
the server; this launcher is where, with ``--serve``, the project's server is started
(the one way, ``ensemble.server``) and where signals are handled the same way.

    python -m ui                          # Triton at $TRITON_URL or localhost:8001
    python -m ui --url gpu-host:8001      # any Triton that serves the ensembles
    python -m ui --serve                  # start the embedded CPU Triton first (make demo)
    python -m ui --serve --models my-models.toml

Prints one line, ``demo: http://127.0.0.1:7860 (Triton gRPC 127.0.0.1:8001)``; Ctrl-C or
SIGTERM stops the page and, with ``--serve``, Triton. Gradio's files (uploads) go to a
temporary directory of this process, deleted at exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from client.api import URL_ENV
    from ensemble.server import add_server_arguments

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
    add_server_arguments(ap)
    args = ap.parse_args(argv)
    if args.serve and args.url:
        ap.error("--url points at a running Triton, --serve starts one: give one of them")
    if args.models and not args.serve:
        ap.error("--models is for --serve: a running Triton already serves its own")
    return args


def main(argv: list[str] | None = None) -> int:
    from ensemble.server import stop_signals

    # Handlers first: importing gradio, grpc and the rest takes seconds, and Ctrl-C in
    # those seconds should stop us as cleanly as later.
    with stop_signals() as stop:
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
        try:
            if args.serve:
                return serve_with_triton(args, stop)
            from client.api import resolve_url

            url = resolve_url(args.url)
            close = launch_ui(args, url)
            if close is None:
                return 2
            try:
                stop.wait()
            finally:
                close()
            return 0
        finally:
            shutil.rmtree(temp_dir, ignore_errors=True)


def serve_with_triton(args: argparse.Namespace, stop: threading.Event) -> int:
    """The embedded CPU server (the project's one way to start it), then the page."""
    from ensemble.registry import ModelsFileError
    from ensemble.server import Ports, ServerError, create_server, serve_until_stopped

    try:
        server = create_server(
            args.models, ports=Ports(args.http_port, args.grpc_port, args.metrics_port)
        )
    except (ModelsFileError, ServerError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed: list[bool] = []

    def on_ready(server) -> Callable[[], None] | None:
        close = launch_ui(args, server.grpc_url)
        if close is None:
            failed.append(True)
            stop.set()
        return close

    try:
        code = serve_until_stopped(server, stop, on_ready)
    except ServerError as e:  # a busy port, found before Triton starts
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 2 if failed else code


def launch_ui(args: argparse.Namespace, url: str) -> Callable[[], None] | None:
    """Serve the page on ``args.host:args.port`` for the Triton at ``url``; returns the
    function that closes it, or None when the page could not be served."""
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
        return None
    print(f"demo: http://{args.host}:{args.port} (Triton gRPC {url})", flush=True)

    def close() -> None:
        app.close()
        client.close()

    return close


if __name__ == "__main__":
    sys.exit(main())
