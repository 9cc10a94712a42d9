"""Who may use the web demo: ``ui.__main__.demo_access`` and the auth file's parser.

A page on a loopback address is for this machine; on any other it needs a login, from
``$DEMO_USERNAME`` + ``$DEMO_PASSWORD`` or an auth file, or an explicit ``--no-auth``.
No password may reach a message, a warning or a repr.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import ui.__main__ as launcher
from ui.__main__ import (
    AUTH_FILE_ENV,
    PASSWORD_ENV,
    USERNAME_ENV,
    Access,
    AccessError,
    Account,
    demo_access,
    is_loopback_host,
    parse_auth_lines,
    read_auth_file,
)

pytestmark = pytest.mark.unit

SECRET = "s3cret:with-colon"
ENV = {USERNAME_ENV: "ann", PASSWORD_ENV: SECRET}


def auth_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "users.txt"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def refusal(host="0.0.0.0", env=None, file=None, no_auth=False) -> str:
    with pytest.raises(AccessError) as caught:
        demo_access(host, env or {}, file, no_auth)
    message = str(caught.value)
    assert "\n" not in message, "one line"
    assert SECRET not in message and "hunter2" not in message
    return message


# --- addresses ------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "[::1]", "localhost", "LOCALHOST",
     "::ffff:127.0.0.1"],
)  # fmt: skip
def test_loopback_addresses(host):
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "fd00::2", "", "myhost.lan", "128.0.0.1"]
)
def test_other_addresses_are_not_loopback(host):
    assert not is_loopback_host(host)


# --- the decision ----------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_needs_no_login(host):
    access = demo_access(host, {}, None, no_auth=False)
    assert access == Access()
    assert not access.login and access.gradio_auth() is None and not access.warnings


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.2", "example.org"])
def test_non_loopback_without_accounts_is_refused_naming_the_options(host):
    message = refusal(host)
    assert host in message
    for option in (USERNAME_ENV, PASSWORD_ENV, "--auth-file", AUTH_FILE_ENV, "--no-auth"):
        assert option in message


def test_no_auth_serves_open_with_a_warning():
    access = demo_access("0.0.0.0", {}, None, no_auth=True)
    assert not access.login and access.gradio_auth() is None
    (warning,) = access.warnings
    assert warning.startswith("warning:") and "0.0.0.0" in warning and "--no-auth" in warning


def test_no_auth_on_loopback_is_quiet():
    assert demo_access("127.0.0.1", {}, None, no_auth=True) == Access()


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_environment_account_is_applied_on_any_address(host):
    access = demo_access(host, ENV, None, no_auth=False)
    assert access.login
    assert access.gradio_auth() == [("ann", SECRET)]
    assert USERNAME_ENV in access.source


def test_environment_username_is_stripped_password_kept_exact():
    # Gradio strips the login form's user name; the password is compared as typed.
    access = demo_access("0.0.0.0", {USERNAME_ENV: " ann ", PASSWORD_ENV: " pw "}, None, False)
    assert access.gradio_auth() == [("ann", " pw ")]


@pytest.mark.parametrize(
    ("env", "given", "missing"),
    [
        ({USERNAME_ENV: "ann"}, USERNAME_ENV, PASSWORD_ENV),
        ({USERNAME_ENV: "ann", PASSWORD_ENV: ""}, USERNAME_ENV, PASSWORD_ENV),
        ({PASSWORD_ENV: SECRET}, PASSWORD_ENV, USERNAME_ENV),
    ],
)
def test_half_an_environment_account_is_an_error(env, given, missing):
    # Even on loopback: a half-set account is a mistake to report, not to ignore.
    message = refusal("127.0.0.1", env)
    assert message.startswith(f"${given} is set but ${missing} is not")


def test_auth_file_accounts(tmp_path):
    path = auth_file(tmp_path, "# demo users\n\nann:pw1\n  bob : pw:2  \n")
    access = demo_access("0.0.0.0", {}, path, no_auth=False)
    assert access.gradio_auth() == [("ann", "pw1"), ("bob", "pw:2")]
    assert access.source == str(path)
    assert access.warnings == ()


def test_auth_file_from_the_environment(tmp_path):
    path = auth_file(tmp_path, "ann:pw1\n")
    access = demo_access("0.0.0.0", {AUTH_FILE_ENV: str(path)}, None, no_auth=False)
    assert access.gradio_auth() == [("ann", "pw1")]


def test_auth_file_option_wins_over_the_environment(tmp_path):
    path = auth_file(tmp_path, "ann:pw1\n")
    missing = tmp_path / "missing.txt"
    access = demo_access("0.0.0.0", {AUTH_FILE_ENV: str(missing)}, path, no_auth=False)
    assert access.gradio_auth() == [("ann", "pw1")]


def test_environment_account_and_auth_file_together(tmp_path):
    path = auth_file(tmp_path, "bob:pw2\n")
    access = demo_access("0.0.0.0", ENV, path, no_auth=False)
    assert access.gradio_auth() == [("ann", SECRET), ("bob", "pw2")]
    assert USERNAME_ENV in access.source and str(path) in access.source


def test_same_user_in_environment_and_file_is_an_error(tmp_path):
    path = auth_file(tmp_path, "ann:hunter2\n")
    message = refusal(env=ENV, file=path)
    assert "'ann'" in message and str(path) in message


def test_no_auth_with_accounts_is_a_contradiction(tmp_path):
    assert "--no-auth" in refusal(env=ENV, no_auth=True)
    path = auth_file(tmp_path, "ann:hunter2\n")
    assert str(path) in refusal("127.0.0.1", file=path, no_auth=True)


def test_missing_auth_file_is_an_error(tmp_path):
    missing = tmp_path / "nope.txt"
    message = refusal(file=missing)
    assert str(missing) in message and "No such file" in message


def test_auth_file_readable_by_others_warns(tmp_path):
    path = auth_file(tmp_path, "ann:hunter2\n", mode=0o644)
    access = demo_access("0.0.0.0", {}, path, no_auth=False)
    (warning,) = access.warnings
    assert str(path) in warning and "0644" in warning and "chmod 600" in warning
    assert "hunter2" not in warning


# --- the file's format -------------------------------------------------------------


def test_parse_skips_blank_lines_and_comments():
    text = "\n# a comment\n   \n  # indented comment\nann:pw\r\nbob:#not-a-comment\n"
    accounts = parse_auth_lines(text, "f")
    assert [(a.user, a.password) for a in accounts] == [("ann", "pw"), ("bob", "#not-a-comment")]


@pytest.mark.parametrize(
    ("text", "line", "why"),
    [
        ("ann:pw\nhunter2\n", 2, "no ':'"),
        ("# c\n\n:hunter2\n", 3, "empty user name"),
        ("ann:   \n", 1, "empty password for 'ann'"),
        ("ann:hunter2\nbob:x\nann:hunter2\n", 3, "user 'ann' again (first on line 1)"),
    ],
)
def test_malformed_lines_name_file_and_line_never_the_password(text, line, why):
    with pytest.raises(AccessError) as caught:
        parse_auth_lines(text, "users.txt")
    message = str(caught.value)
    assert message.startswith(f"users.txt line {line}: ")
    assert why in message
    assert "hunter2" not in message


def test_malformed_file_is_refused_by_name(tmp_path):
    path = auth_file(tmp_path, "ann:pw\nhunter2\n")
    message = refusal("127.0.0.1", file=path)
    assert message.startswith(f"{path} line 2:")


def test_empty_auth_file_is_an_error(tmp_path):
    path = auth_file(tmp_path, "# nobody yet\n\n")
    with pytest.raises(AccessError, match="has no user:password line"):
        read_auth_file(path)


def test_not_utf8_auth_file_is_an_error(tmp_path):
    path = tmp_path / "users.txt"
    path.write_bytes(b"ann:\xff\xfe\n")
    with pytest.raises(AccessError, match=f"cannot read the auth file {path}"):
        read_auth_file(path)


def test_passwords_stay_out_of_reprs():
    access = Access((Account("ann", SECRET),), "$DEMO_USERNAME")
    assert SECRET not in repr(access) and SECRET not in str(access)
    assert "ann" in repr(access)


# --- the launcher ----------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch):
    for name in (USERNAME_ENV, PASSWORD_ENV, AUTH_FILE_ENV):
        monkeypatch.delenv(name, raising=False)


def fail_if_started(*_args, **_kwargs):
    raise AssertionError("the page or Triton was started before the access check")


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_main_refuses_an_open_network_page_before_starting_anything(
    clean_env, monkeypatch, capsys, host
):
    monkeypatch.setattr(launcher, "serve_with_triton", fail_if_started)
    monkeypatch.setattr(launcher, "launch_ui", fail_if_started)
    gradio_dir = os.environ.get("GRADIO_TEMP_DIR")
    assert launcher.main(["--serve", "--host", host]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error: the demo would listen on {host}, beyond this machine")
    assert err.count("\n") == 1
    for option in (USERNAME_ENV, PASSWORD_ENV, "--auth-file", AUTH_FILE_ENV, "--no-auth"):
        assert option in err
    assert os.environ.get("GRADIO_TEMP_DIR") == gradio_dir, "refused before any setup"


def test_main_reports_a_malformed_auth_file(clean_env, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(launcher, "launch_ui", fail_if_started)
    path = auth_file(tmp_path, "hunter2\n")
    assert launcher.main(["--auth-file", str(path)]) == 2
    _, err = capsys.readouterr()
    assert err == f"error: {path} line 1: expected user:password (no ':' on the line)\n"


def test_auth_file_and_no_auth_are_exclusive_options(clean_env, capsys):
    with pytest.raises(SystemExit) as caught:
        launcher.parse_args(["--auth-file", "x", "--no-auth"])
    assert caught.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
