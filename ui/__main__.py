"""``python -m ui``: the web demo, on any Triton or on one it starts itself.

The page (``ui.app``) knows only the public contract and learns everything else from
the server; this launcher is where, with ``--serve``, the project's server is started
(the one way, ``ensemble.server``) and where signals are handled the same way.

    python -m ui                          # Triton at $TRITON_URL or localhost:8001
    python -m ui --url gpu-host:8001      # any Triton that serves the ensembles
    python -m ui --serve                  # start the embedded CPU Triton first (make demo)
    python -m ui --serve --models my-models.toml
    DEMO_USERNAME=ann DEMO_PASSWORD=... python -m ui --serve --host 0.0.0.0
    python -m ui --serve --host 0.0.0.0 --auth-file demo-users.txt

Prints one line, ``demo: http://127.0.0.1:7860 (Triton gRPC 127.0.0.1:8001)``; Ctrl-C or
SIGTERM stops the page and, with ``--serve``, Triton. Gradio's files (uploads) go to a
temporary directory of this process, deleted at exit.

Who may use the page (``demo_access``): on a loopback address (127.0.0.0/8, ::1,
localhost) anyone on this machine; on any other address only after a login, with the
accounts of ``$DEMO_USERNAME`` + ``$DEMO_PASSWORD`` and/or an auth file (``--auth-file``
or ``$DEMO_AUTH_FILE``: ``user:password`` lines). Without accounts such a page is
refused (exit 2, before Triton starts) unless ``--no-auth`` says an open page is
intended. Accounts given on loopback are applied as well. Passwords are never printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ensemble.contract import is_loopback_host

USERNAME_ENV = "DEMO_USERNAME"
PASSWORD_ENV = "DEMO_PASSWORD"
AUTH_FILE_ENV = "DEMO_AUTH_FILE"
# Shown on Gradio's login page (HTML); says where accounts come from, not what they are.
AUTH_MESSAGE = (
    "This demo needs a login. Its accounts are set by whoever started it "
    f"(${USERNAME_ENV} / ${PASSWORD_ENV}, or an auth file)."
)


class AccessError(ValueError):
    """The page cannot be served as asked (one line, safe to print: no password)."""


@dataclass(frozen=True)
class Account:
    user: str
    password: str = field(repr=False)  # never in a repr, a log line or a traceback


@dataclass(frozen=True)
class Access:
    """Who may use the page: ``accounts`` after a login, or anyone when there are none.

    ``source`` says where the accounts came from (for the start line); ``warnings`` are
    lines to print before serving.
    """

    accounts: tuple[Account, ...] = ()
    source: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def login(self) -> bool:
        return bool(self.accounts)

    def gradio_auth(self) -> list[tuple[str, str]] | None:
        """``launch(auth=...)``'s form: a list of (user, password), or None for no login."""
        return [(a.user, a.password) for a in self.accounts] or None


def parse_auth_lines(text: str, source: str) -> tuple[Account, ...]:
    """The accounts of an auth file's ``text``: one ``user:password`` per line (split at
    the first ``:``; spaces around either part ignored), blank lines and ``#`` comments
    skipped. A malformed line raises ``AccessError`` naming ``source`` and the line
    number, never the line itself (it may hold a password)."""
    accounts: list[Account] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        user, colon, password = line.partition(":")
        user, password = user.strip(), password.strip()
        if not colon:
            raise AccessError(f"{where}: expected user:password (no ':' on the line)")
        if not user:
            raise AccessError(f"{where}: expected user:password (empty user name)")
        if not password:
            raise AccessError(f"{where}: expected user:password (empty password for {user!r})")
        if user in first_line:
            raise AccessError(f"{where}: user {user!r} again (first on line {first_line[user]})")
        first_line[user] = number
        accounts.append(Account(user, password))
    return tuple(accounts)


def read_auth_file(path: Path) -> tuple[tuple[Account, ...], tuple[str, ...]]:
    """The accounts of the auth file at ``path``, and warnings about it (a file other
    users may read). An unreadable, malformed or empty file raises ``AccessError``."""
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode & 0o777
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise AccessError(f"cannot read the auth file {path}: {reason}") from None
    accounts = parse_auth_lines(text, str(path))
    if not accounts:
        raise AccessError(f"the auth file {path} has no user:password line")
    warnings = ()
    if mode & 0o077:
        warnings = (f"warning: {path} can be read by other users (mode {mode:04o}): chmod 600 it",)
    return accounts, warnings


def demo_access(host: str, env: Mapping[str, str], auth_file: Path | None, no_auth: bool) -> Access:
    """Who may use a page listening on ``host``, from the environment ``env``
    (``$DEMO_USERNAME`` + ``$DEMO_PASSWORD``, ``$DEMO_AUTH_FILE``), ``--auth-file``
    (wins over ``$DEMO_AUTH_FILE``) and ``--no-auth``.

    Every account given is applied, on any address. Without accounts, a loopback
    address is served open; any other only with ``no_auth`` (and a warning), else
    ``AccessError`` says how to give a login. Reads the auth file, nothing else.
    """
    accounts: list[Account] = []
    sources: list[str] = []
    warnings: list[str] = []
    user = env.get(USERNAME_ENV, "").strip()
    password = env.get(PASSWORD_ENV, "")
    if bool(user) != bool(password):
        given, missing = (USERNAME_ENV, PASSWORD_ENV) if user else (PASSWORD_ENV, USERNAME_ENV)
        raise AccessError(f"${given} is set but ${missing} is not: set both, or neither")
    if user:
        accounts.append(Account(user, password))
        sources.append(f"${USERNAME_ENV}")
    if auth_file is None and env.get(AUTH_FILE_ENV, "").strip():
        auth_file = Path(env[AUTH_FILE_ENV].strip())
    if auth_file is not None:
        from_file, file_warnings = read_auth_file(auth_file)
        for account in from_file:
            if account.user == user:
                raise AccessError(f"user {user!r} is both ${USERNAME_ENV} and in {auth_file}")
        accounts.extend(from_file)
        sources.append(str(auth_file))
        warnings.extend(file_warnings)
    if accounts and no_auth:
        raise AccessError(
            f"--no-auth asks for a page without a login, but accounts are given "
            f"({', '.join(sources)}): drop one or the other"
        )
    if accounts:
        return Access(tuple(accounts), " and ".join(sources), tuple(warnings))
    if is_loopback_host(host):
        return Access()
    if no_auth:
        return Access(
            warnings=(
                f"warning: the demo listens on {host} with no login (--no-auth): "
                "anyone who can reach it can use it",
            )
        )
    raise AccessError(
        f"the demo would listen on {host}, beyond this machine, without a login: "
        f"set ${USERNAME_ENV} and ${PASSWORD_ENV}, or give --auth-file FILE "
        f"(or ${AUTH_FILE_ENV}) with user:password lines, or --no-auth if an open "
        "page is intended"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from client import URL_ENV
    from ensemble.server import add_server_arguments

    ap = argparse.ArgumentParser(
        prog="python -m ui",
        description="The web demo, on any Triton or on one it starts itself.",
    )
    ap.add_argument(
        "--url",
        help=f"Triton gRPC address host:port, or several replicas' separated by commas "
        f"(default ${URL_ENV} or localhost:8001)",
    )
    ap.add_argument("--host", default="127.0.0.1", help="address the page listens on")
    ap.add_argument("--port", type=int, default=7860, help="port of the page")
    login = ap.add_mutually_exclusive_group()
    login.add_argument(
        "--auth-file",
        type=Path,
        help=f"user:password lines: the page's logins (default ${AUTH_FILE_ENV}; "
        f"also ${USERNAME_ENV} + ${PASSWORD_ENV})",
    )
    login.add_argument(
        "--no-auth",
        action="store_true",
        help="serve a non-loopback --host without a login, on purpose",
    )
    ap.add_argument(
        "--serve", action="store_true", help="start the embedded CPU Triton first (localhost)"
    )
    add_server_arguments(ap)
    args = ap.parse_args(argv)
    if args.serve and args.url:
        ap.error("--url points at a running Triton, --serve starts one: give one of them")
    if args.models and not args.serve:
        ap.error("--models is for --serve: a running Triton already serves its own")
    if args.url is not None:
        from client.connection import parse_endpoints

        try:
            parse_endpoints(args.url)
        except ValueError as e:
            ap.error(str(e))
    return args


def main(argv: list[str] | None = None) -> int:
    from ensemble.processes import stop_signals

    # Handlers first: importing gradio, grpc and the rest takes seconds, and Ctrl-C in
    # those seconds should stop us as cleanly as later.
    with stop_signals() as stop:
        args = parse_args(argv)
        # Before anything starts (Triton takes a minute): a page that would be open to
        # the network by mistake is refused at once.
        try:
            access = demo_access(args.host, os.environ, args.auth_file, args.no_auth)
        except AccessError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for warning in access.warnings:
            print(warning, file=sys.stderr, flush=True)
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
                return serve_with_triton(args, access, stop)
            from client.connection import resolve_url

            url = resolve_url(args.url)
            close = launch_ui(args, access, url)
            if close is None:
                return 2
            try:
                stop.wait()
            finally:
                close()
            return 0
        finally:
            shutil.rmtree(temp_dir, ignore_errors=True)


def serve_with_triton(args: argparse.Namespace, access: Access, stop: threading.Event) -> int:
    """The embedded CPU server (the project's one way to start it), then the page."""
    from ensemble.registry import ModelsFileError
    from ensemble.server import ServerError, create_server, serve_until_stopped, server_options

    try:
        # Triton on loopback: only the page is exposed (behind its login).
        server = create_server(args.models, **server_options(args))
    except (ModelsFileError, ServerError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed: list[bool] = []

    def on_ready(server) -> Callable[[], None] | None:
        config = server.config
        tls = config.tls.cert if config.tls else False
        close = launch_ui(args, access, server.grpc_url, tls=tls, api_key=config.api_key or "")
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


def launch_ui(
    args: argparse.Namespace, access: Access, url: str, *, tls=None, api_key: str | None = None
) -> Callable[[], None] | None:
    """Serve the page on ``args.host:args.port`` for the Triton at ``url``, behind a
    login when ``access`` has accounts; returns the function that closes it, or None
    when the page could not be served. ``tls`` and ``api_key``: DetectorClient's (None:
    from the environment)."""
    from client import DetectorClient
    from ui.app import LAUNCH_OPTIONS, build_app

    client = DetectorClient(url, tls=tls, api_key=api_key)
    app = build_app(client)
    try:
        app.launch(
            server_name=args.host,
            server_port=args.port,
            prevent_thread_lock=True,
            quiet=True,
            auth=access.gradio_auth(),
            auth_message=AUTH_MESSAGE if access.login else None,
            **LAUNCH_OPTIONS,
        )
    except OSError as e:
        print(f"error: cannot serve the page on {args.host}:{args.port}: {e}", file=sys.stderr)
        client.close()
        return None
    count = len(access.accounts)
    login = f"; login: {count} account{'s' * (count > 1)} from {access.source}" if count else ""
    print(f"demo: http://{args.host}:{args.port} (Triton gRPC {url}{login})", flush=True)

    def close() -> None:
        app.close()
        client.close()

    return close


if __name__ == "__main__":
    sys.exit(main())
