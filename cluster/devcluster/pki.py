"""Certificates for the local control plane, made with the ``openssl`` command line.

One CA signs the API server's serving certificate and the client certificates of the admin
user (group ``system:masters``), the controller manager and the node agent. A separate RSA
key pair signs service-account tokens. Files are reused when they exist.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SERVING_SANS = (
    "IP:127.0.0.1",
    "IP:10.96.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)


class PkiError(Exception):
    """openssl is missing or failed."""


@dataclass(frozen=True)
class Pki:
    folder: Path

    def path(self, name: str) -> Path:
        return self.folder / name

    @property
    def ca_crt(self) -> Path:
        return self.path("ca.crt")

    @property
    def ca_key(self) -> Path:
        return self.path("ca.key")

    @property
    def sa_key(self) -> Path:
        return self.path("sa.key")

    @property
    def sa_pub(self) -> Path:
        return self.path("sa.pub")

    def crt(self, name: str) -> Path:
        return self.path(f"{name}.crt")

    def key(self, name: str) -> Path:
        return self.path(f"{name}.key")


def _openssl(*args: str) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise PkiError("the openssl command is needed (Debian package: openssl)")
    proc = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PkiError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip()}")


def _leaf(pki: Pki, name: str, subject: str, sans: tuple[str, ...] = ()) -> None:
    if pki.crt(name).exists() and pki.key(name).exists():
        return
    csr = pki.path(f"{name}.csr")
    _openssl(
        "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", str(pki.key(name)), "-out", str(csr), "-subj", subject,
    )  # fmt: skip
    ext = ["basicConstraints=critical,CA:FALSE",
           "keyUsage=critical,digitalSignature,keyEncipherment",
           "extendedKeyUsage=serverAuth,clientAuth"]  # fmt: skip
    if sans:
        ext.append("subjectAltName=" + ",".join(sans))
    with tempfile.NamedTemporaryFile("w", suffix=".ext", delete=False) as f:
        f.write("\n".join(ext) + "\n")
        extfile = f.name
    try:
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(pki.ca_crt), "-CAkey", str(pki.ca_key),
            "-CAcreateserial", "-out", str(pki.crt(name)), "-days", "825", "-sha256",
            "-extfile", extfile,
        )  # fmt: skip
    finally:
        Path(extfile).unlink(missing_ok=True)
        csr.unlink(missing_ok=True)


def ensure_pki(folder: Path) -> Pki:
    """Create (or reuse) the CA, serving and client certificates and the SA key pair."""
    folder.mkdir(parents=True, exist_ok=True)
    pki = Pki(folder)
    if not (pki.ca_crt.exists() and pki.ca_key.exists()):
        _openssl(
            "req", "-x509", "-new", "-nodes", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-keyout", str(pki.ca_key),
            "-out", str(pki.ca_crt), "-days", "3650", "-subj", "/CN=devcluster-ca",
        )  # fmt: skip
        for stale in folder.glob("*.crt"):
            if stale != pki.ca_crt:
                stale.unlink()
    _leaf(pki, "apiserver", "/CN=kube-apiserver", SERVING_SANS)
    _leaf(pki, "admin", "/O=system:masters/CN=devcluster-admin")
    _leaf(pki, "controller-manager", "/O=system:masters/CN=system:kube-controller-manager")
    _leaf(pki, "node-agent", "/O=system:masters/CN=devcluster-node-agent")
    if not (pki.sa_key.exists() and pki.sa_pub.exists()):
        _openssl("genrsa", "-out", str(pki.sa_key), "2048")
        _openssl("rsa", "-in", str(pki.sa_key), "-pubout", "-out", str(pki.sa_pub))
    for p in folder.iterdir():
        if p.suffix == ".key":
            p.chmod(0o600)
    return pki
