"""Every Kafka client is built by one factory with the service's TLS and SASL settings (issue 17 finding 2)."""

from __future__ import annotations

import ast
import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared import kafka
from shared.kafka import KafkaSecurity

REPO = Path(__file__).resolve().parents[2]
CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient"}


@pytest.fixture(autouse=True)
def plaintext_after() -> Iterator[None]:
    yield
    kafka.configure(KafkaSecurity())


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = tmp_path / "ca.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _kafka_client_calls() -> Iterator[tuple[str, int, ast.Call]]:
    for folder in ("shared", "services", "deploy"):
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    func = node.func
                    name = (func.id if isinstance(func, ast.Name)
                            else func.attr if isinstance(func, ast.Attribute) else "")
                    if name in CLIENTS:
                        yield str(path.relative_to(REPO)), node.lineno, node


def test_every_kafka_client_in_the_code_is_built_with_the_security_options() -> None:
    calls = list(_kafka_client_calls())
    assert len(calls) >= 6  # producers, consumers, the admin client, the readiness probe's client
    for where, line, call in calls:
        spread = [k.value for k in call.keywords if k.arg is None]
        assert any(isinstance(v, ast.Call) and (getattr(v.func, "id", None) == "client_options"
                                                or getattr(v.func, "attr", None) == "client_options")
                   for v in spread), f"{where}:{line} builds a Kafka client without **client_options()"


def test_consumers_never_create_topics() -> None:
    source = (REPO / "shared" / "consumer.py").read_text()
    names = {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Attribute)}
    assert not names & {"ensure_topics", "create_topics", "AIOKafkaAdminClient"}


async def test_sasl_ssl_reaches_the_clients(ca_file: Path) -> None:
    kafka.configure(KafkaSecurity(security_protocol="SASL_SSL", sasl_username="refnet-intake",
                                  sasl_password="s3cret", ssl_cafile=str(ca_file)))
    producer = kafka.make_producer("127.0.0.1:1")
    client = producer.client
    assert client._security_protocol == "SASL_SSL"
    assert client._sasl_mechanism == "SCRAM-SHA-512"
    assert client._sasl_plain_username == "refnet-intake"
    assert client._sasl_plain_password == "s3cret"
    context = client._ssl_context
    assert context is not None and context.check_hostname  # the broker is verified, not just encrypted


def test_settings_read_the_password_from_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import ServiceSettings

    secret = tmp_path / "password"
    secret.write_text("from-the-file\n")
    monkeypatch.setenv("REFNET_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext")
    monkeypatch.setenv("REFNET_KAFKA_SASL_USERNAME", "refnet-audit")
    monkeypatch.setenv("REFNET_KAFKA_SASL_PASSWORD_FILE", str(secret))
    security = KafkaSecurity.from_settings(ServiceSettings())
    assert security.client_options() == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "refnet-audit", "sasl_plain_password": "from-the-file"}
    assert "from-the-file" not in repr(security) and "from-the-file" not in str(security)


@pytest.mark.parametrize(("fields", "named"), [
    ({"security_protocol": "SASL_SSL", "sasl_username": "u"}, "password"),
    ({"security_protocol": "SASL_SSL", "sasl_password": "p"}, "username"),
    ({"security_protocol": "SASL_SSL", "sasl_username": "u", "sasl_password": "p", "sasl_mechanism": "PLAIN"},
     "kafka_sasl_mechanism"),
    ({"security_protocol": "TLS"}, "kafka_security_protocol"),
])
def test_incomplete_security_settings_stop_the_start(fields: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        KafkaSecurity(**fields)


def test_plaintext_stays_the_embedded_default() -> None:
    assert kafka.client_options() == {"security_protocol": "PLAINTEXT"}
