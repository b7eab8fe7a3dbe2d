"""A real RFC 3161 time-stamp authority on 127.0.0.1 for tests.

Certificates come from ``cryptography`` (a test CA and a TSA certificate it issues, with the
critical ``timeStamping`` key usage); replies come from ``openssl ts -reply`` run by a small
HTTP handler, so the tokens are produced by an independent implementation, not by ours.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

OPENSSL = shutil.which("openssl")

_CONFIG = """\
[ tsa ]
default_tsa = tsa_config1
[ tsa_config1 ]
dir = {dir}
serial = {dir}/serial
crypto_device = builtin
signer_cert = {dir}/tsa.pem
certs = {dir}/ca.pem
signer_key = {dir}/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha256, sha384, sha512
accuracy = secs:1
clock_precision_digits = 6
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_pki(folder: Path, name: str = "Test", tsa_days: int = 30,
             tsa_start: datetime | None = None) -> tuple[Path, Path, Path]:
    """A CA and a TSA certificate it signs; returns (ca.pem, tsa.pem, tsa.key)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name(f"{name} Root CA"))
          .issuer_name(_name(f"{name} Root CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    tsa_key = ec.generate_private_key(ec.SECP256R1())
    start = tsa_start or now - timedelta(days=1)
    tsa = (x509.CertificateBuilder().subject_name(_name(f"{name} TSA"))
           .issuer_name(ca.subject).public_key(tsa_key.public_key())
           .serial_number(x509.random_serial_number())
           .not_valid_before(start).not_valid_after(start + timedelta(days=tsa_days))
           .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
           .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]),
                          critical=True)
           .sign(ca_key, hashes.SHA256()))
    (folder / "ca.pem").write_bytes(_pem(ca))
    (folder / "tsa.pem").write_bytes(_pem(tsa))
    _write_key(folder / "tsa.key", tsa_key)
    (folder / "serial").write_text("01\n")
    (folder / "tsa.cnf").write_text(_CONFIG.format(dir=folder))
    return folder / "ca.pem", folder / "tsa.pem", folder / "tsa.key"


@dataclass
class TSA:
    url: str
    ca: Path
    folder: Path
    server: ThreadingHTTPServer

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_tsa(folder: Path, name: str = "Test") -> TSA:
    """Serve ``openssl ts -reply`` at http://127.0.0.1:PORT/ with a fresh test PKI."""
    ca, _, _ = make_pki(folder, name)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            query = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock, tempfile.TemporaryDirectory() as tmp:
                q, r = Path(tmp) / "q.tsq", Path(tmp) / "r.tsr"
                q.write_bytes(query)
                res = subprocess.run([OPENSSL, "ts", "-reply", "-config",
                                      str(folder / "tsa.cnf"), "-queryfile", str(q),
                                      "-out", str(r)], capture_output=True)
                body = r.read_bytes() if res.returncode == 0 and r.is_file() else b""
            self.send_response(200 if body else 500)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return TSA(f"http://127.0.0.1:{server.server_address[1]}/", ca, folder, server)
