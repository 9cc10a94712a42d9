"""The web demo's login, through ``python -m ui`` as a user starts it, in headless Chromium.

The launcher runs as its own process against the session's Triton, on 127.0.0.1 with
accounts from both places it reads them (``$DEMO_USERNAME`` + ``$DEMO_PASSWORD`` and
``--auth-file``): accounts given are applied on any address, so the login is the same
one a page on the network gets, without opening a port beyond this machine. Nothing
of the page answers before a login; a wrong password is refused; the right one shows
the demo, which detects. No password appears in the launcher's output.

The refusal of a non-loopback ``--host`` without accounts, before anything starts, is
tests/test_demo_access.py's. Screenshots go to ``test-artifacts/ui/login/``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from ui_helpers import (
    ARTIFACTS_DIR,
    LOAD_TIMEOUT_MS,
    click_detect,
    fresh_browser,
    read_table,
    upload,
)

from ui.__main__ import AUTH_FILE_ENV, PASSWORD_ENV, USERNAME_ENV

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[1]
# Away from test_ui_browser.py's screenshots: it clears its folder's before it runs.
SHOTS_DIR = ARTIFACTS_DIR / "login"
START_TIMEOUT_S = 120  # imports, Gradio's start and the first look at Triton on 2 cores
DEMO_LINE = "demo: http://"


def launcher_env(**extra: str) -> dict[str, str]:
    """This environment without any demo account of the user's, plus ``extra``."""
    env = {
        k: v for k, v in os.environ.items() if k not in (USERNAME_ENV, PASSWORD_ENV, AUTH_FILE_ENV)
    }
    return env | extra


class Launcher:
    """``python -m ui`` as a child process; its output (stdout and stderr) collected."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ui", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own group: stopped as a whole, never left behind
        )
        self.lines: list[str] = []
        self.started = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith(DEMO_LINE):
                self.started.set()
        self.started.set()  # it ended: stop waiting

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_started(self) -> str:
        """The page's URL from the launcher's ``demo:`` line."""
        if not self.started.wait(START_TIMEOUT_S) or self.process.poll() is not None:
            pytest.fail(f"python -m ui did not start:\n{self.output}", pytrace=False)
        (line,) = [line for line in self.lines if line.startswith(DEMO_LINE)]
        return line.removeprefix("demo: ").split(" ", 1)[0] + "/"

    def stop(self) -> int:
        """SIGTERM (the launcher's own clean stop), then SIGKILL if it hangs."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._reader.join(10)
        return self.process.returncode


@contextlib.contextmanager
def launched(args: list[str], env: dict[str, str]) -> Iterator[Launcher]:
    launcher = Launcher(args, env)
    try:
        yield launcher
    finally:
        launcher.stop()


@pytest.fixture(scope="module")
def accounts() -> dict[str, str]:
    """user -> password: ``ann`` from an auth file, ``bob`` from the environment."""
    return {"ann": secrets.token_urlsafe(12), "bob": secrets.token_urlsafe(12)}


@pytest.fixture(scope="module")
def demo(triton_url, accounts, tmp_path_factory) -> Iterator[tuple[str, Launcher]]:
    """The page's URL and its launcher, started as a user would with accounts."""
    from ensemble.processes import free_port

    auth_file = tmp_path_factory.mktemp("auth") / "users.txt"
    auth_file.write_text(f"# who may use the demo\n\nann:{accounts['ann']}\n")
    auth_file.chmod(0o600)
    env = launcher_env(**{USERNAME_ENV: "bob", PASSWORD_ENV: accounts["bob"]})
    args = ["--url", triton_url, "--host", "127.0.0.1", "--port", str(free_port())]
    with launched([*args, "--auth-file", str(auth_file)], env) as launcher:
        url = launcher.wait_started()
        yield url, launcher
    for password in accounts.values():
        assert password not in launcher.output, "a password in the launcher's output"


@pytest.fixture(scope="module")
def browser_context():
    with fresh_browser(SHOTS_DIR) as context:
        yield context


def http_status(url: str, data: dict[str, str] | None = None) -> int:
    """The status of a GET (or a form POST with ``data``) without any cookie."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with urllib.request.urlopen(url, body, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def screenshot(page: Page, name: str) -> None:
    SHOTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS_DIR / f"{name}.png"), full_page=True, animations="disabled")


def log_in(page: Page, user: str, password: str) -> None:
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()


def test_launcher_says_the_page_needs_a_login(demo):
    _, launcher = demo
    args = launcher.process.args
    auth_file = args[args.index("--auth-file") + 1]
    (line,) = [line for line in launcher.lines if line.startswith(DEMO_LINE)]
    assert line.endswith(f"; login: 2 accounts from ${USERNAME_ENV} and {auth_file})"), line


def test_nothing_answers_before_a_login(demo, accounts):
    url, _ = demo
    # The page's config, its API description and a run of /detect: all locked.
    assert http_status(url + "config") == 401
    assert http_status(url + "gradio_api/info") == 401
    assert http_status(url + "gradio_api/call/detect", {"data": "[]"}) == 401
    # Gradio's login endpoint: 400 for a wrong password, 200 for each account.
    login = url + "login"
    assert http_status(login, {"username": "ann", "password": accounts["bob"]}) == 400
    assert http_status(login, {"username": "eve", "password": accounts["ann"]}) == 400
    for user, password in accounts.items():
        assert http_status(login, {"username": user, "password": password}) == 200, user


def test_login_page_refuses_a_wrong_password_then_the_demo_detects(
    demo, accounts, browser_context, photos_dir
):
    url, _ = demo
    page = browser_context.new_page()
    try:
        page.goto(url)
        expect(page.get_by_role("button", name="Login")).to_be_visible(timeout=LOAD_TIMEOUT_MS)
        expect(page.locator("body")).to_contain_text(USERNAME_ENV)  # the auth message
        expect(page.locator("#status-line")).to_have_count(0)
        screenshot(page, "01-login-page")

        log_in(page, "ann", "not-" + accounts["ann"])
        expect(page.locator("body")).to_contain_text("Incorrect Credentials")
        expect(page.locator("#status-line")).to_have_count(0)
        screenshot(page, "02-wrong-password")

        log_in(page, "ann", accounts["ann"])
        expect(page.locator("#status-line")).to_contain_text("up", timeout=LOAD_TIMEOUT_MS)
        screenshot(page, "03-logged-in")

        upload(page, photos_dir / "astronaut.png")
        click_detect(page)
        headers, rows = read_table(page, "detections-table")
        assert "label" in headers
        assert "person" in [row["label"] for row in rows], rows
        screenshot(page, "04-detected")
    except BaseException:
        screenshot(page, "failed")
        raise
    finally:
        page.close()
