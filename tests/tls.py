"""A self-signed certificate for TLS tests, made with the ``openssl`` command line tool.

Not a fixture (no conftest): a test calls ``make_self_signed(tmp_path)`` and gives the
certificate to the server as its certificate and to the client as its CA. Without the
``openssl`` tool the calling test skips (the unit tier needs only the virtual environment).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.apt_tools import tool_or_skip

# The names a test connects with: the certificate is valid for both.
SUBJECT_ALT_NAMES = "IP:127.0.0.1,DNS:localhost"
COMMON_NAME = "localhost"
VALID_DAYS = 2  # long enough for any test session, short enough to be useless if leaked
OPENSSL_TIMEOUT_S = 60  # an RSA key takes well under a second; a stuck openssl fails the test


def make_self_signed(directory: Path) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` (mode 0600) into ``directory``; return their paths.

    The certificate is its own CA (``basicConstraints CA:TRUE``), so a client trusts the
    server by passing ``cert.pem`` as its root certificates. The key is RSA 2048 without
    a passphrase.
    """
    openssl = tool_or_skip("openssl")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
            "-days", str(VALID_DAYS),
            "-keyout", str(key), "-out", str(cert),
            "-subj", f"/CN={COMMON_NAME}",
            "-addext", f"subjectAltName={SUBJECT_ALT_NAMES}",
            "-addext", "basicConstraints=critical,CA:TRUE",
        ],
        check=True,
        capture_output=True,
        timeout=OPENSSL_TIMEOUT_S,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key
