"""A secured Apache Kafka: SASL_PLAINTEXT with SCRAM-SHA-256 and ACLs, SASL_SSL (the same over
TLS, with a certificate from a throwaway authority), and SSL with client certificates (mutual
TLS, the certificate's CN the principal). The worker delivers exactly-once with credentials and
the ACLs it needs, the password appears in no output; refused credentials, an untrusted broker
certificate, a missing or untrusted client certificate and the wrong protocol each say so in one
line instead of "no Kafka broker answered"; and a principal without the transactional-id ACL is
refused loudly instead of silently downgraded to at-least-once."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from consumers.audit import committed_events
from consumers.brokers import KafkaBroker
from consumers.brokers.tls import make_certificates
from consumers.clients import ensure_topics, make_producer, started
from consumers.errors import BrokerAuthError, BrokerError, BrokerTlsError
from consumers.publish import publish_stream
from consumers.worker import Worker
from tests.integration.conftest import fresh_settings
from tests.unit.test_cli import run

PASSWORD = "s3cr3t-svc-pw"


@pytest.fixture(scope="module")
def scram_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    b = KafkaBroker(tmp_path_factory.mktemp("kafka-scram"), scram_users={"svc": PASSWORD, "notx": PASSWORD})
    b.start(timeout_s=120)
    # fresh_settings names topics t<tag>.* and groups g<tag> (transactional ids start with the group)
    b.allow("svc", topic="t", group="g", transactional_id="g")
    b.allow("svc", topic="gopwatch.")  # the default topic names, for the CLI
    b.allow("notx", topic="t", group="g")  # everything but transactions
    yield b
    b.stop()


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    b = KafkaBroker(tmp_path_factory.mktemp("kafka-tls"), scram_users={"svc": PASSWORD}, tls=True)
    b.start(timeout_s=120)
    b.allow("svc", topic="t", group="g", transactional_id="g")
    b.allow("svc", topic="gopwatch.")
    yield b
    b.stop()


@pytest.fixture(scope="module")
def mtls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    b = KafkaBroker(tmp_path_factory.mktemp("kafka-mtls"), tls_users=("svc",))
    b.start(timeout_s=120)
    b.allow("svc", topic="t", group="g", transactional_id="g")
    b.allow("svc", topic="gopwatch.")  # the default topic names, for the CLI
    yield b
    b.stop()


def _env(b: KafkaBroker, user: str, password: str) -> dict[str, str]:
    return {"GOPWATCH_KAFKA_BOOTSTRAP": b.bootstrap, "GOPWATCH_KAFKA_SECURITY_PROTOCOL": b.protocol,
            "GOPWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256", "GOPWATCH_KAFKA_SASL_USERNAME": user,
            "GOPWATCH_KAFKA_SASL_PASSWORD": password}  # fmt: skip


@pytest.mark.parametrize(("user", "password"), [("svc", "not-the-password"), ("nobody", PASSWORD)])
def test_refused_credentials_are_one_line_that_says_so(scram_broker, user, password):
    r = run("topics", env=_env(scram_broker, user, password))
    assert r.returncode == 2
    assert (
        f"refused the credentials of user '{user}'" in r.stderr and "no Kafka broker answered" not in r.stderr
    )
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert password not in r.stdout + r.stderr


def test_topics_with_credentials_never_print_the_password(scram_broker):
    r = run("topics", env=_env(scram_broker, "svc", PASSWORD))
    assert r.returncode == 0, r.stderr
    assert "gopwatch.segments" in r.stdout and PASSWORD not in r.stdout + r.stderr


async def _delivered_exactly_once(s, model, segs) -> None:
    await ensure_topics(s)
    w = Worker(s, model, broker_has_transactions=True)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(w.run(stop, ready))
    await asyncio.wait_for(ready.wait(), 60)
    async with started(make_producer(s), s) as p:
        await publish_stream(p, s, "cam-s", iter(segs))
    deadline = asyncio.get_running_loop().time() + 90
    while w.processed < len(segs) + 1 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
    stop.set()
    await task
    assert w.exactly_once
    events = (await committed_events(s))["cam-s"]
    assert events and {e["lifecycle"] for e in events} >= {"started", "ended"}


async def test_the_worker_delivers_exactly_once_over_scram(scram_broker, sensitive_model, small_stream):
    _, _, segs = small_stream
    s = fresh_settings(scram_broker, kafka_security_protocol="SASL_PLAINTEXT",
                       kafka_sasl_mechanism="SCRAM-SHA-256", kafka_sasl_username="svc",
                       kafka_sasl_password=PASSWORD)  # fmt: skip
    await _delivered_exactly_once(s, sensitive_model, segs)
    wrong = s.model_copy(update={"kafka_sasl_password": SecretStr("nope")})
    with pytest.raises(BrokerAuthError):
        await ensure_topics(wrong)


async def test_the_worker_delivers_exactly_once_over_sasl_ssl(tls_broker, sensitive_model, small_stream):
    _, _, segs = small_stream
    # the shipped Kubernetes config's protocol and mechanism (deploy/k8s/configmap.yaml)
    s = fresh_settings(tls_broker, kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                       kafka_sasl_username="svc", kafka_sasl_password=PASSWORD,
                       kafka_ssl_cafile=tls_broker.ca_file)  # fmt: skip
    await _delivered_exactly_once(s, sensitive_model, segs)
    untrusted = s.model_copy(update={"kafka_ssl_cafile": None})  # the system's authorities only
    with pytest.raises(BrokerTlsError, match="CERTIFICATE_VERIFY_FAILED"):
        await ensure_topics(untrusted)


def test_an_untrusted_certificate_is_one_line_that_says_so(tls_broker):
    r = run("topics", env=_env(tls_broker, "svc", PASSWORD))
    assert r.returncode == 2
    assert f"TLS with the broker at {tls_broker.bootstrap} failed" in r.stderr
    assert "certificate verify failed" in r.stderr and "GOPWATCH_KAFKA_SSL_CAFILE" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    trusted = _env(tls_broker, "svc", PASSWORD) | {"GOPWATCH_KAFKA_SSL_CAFILE": str(tls_broker.ca_file)}
    r = run("topics", env=trusted)
    assert r.returncode == 0, r.stderr
    assert "gopwatch.segments" in r.stdout and PASSWORD not in r.stdout + r.stderr


async def test_without_the_transactional_id_acl_the_worker_refuses_to_start(scram_broker, sensitive_model):
    """Delivery auto downgrades only for a broker without transactions, never for a refusal."""
    s = fresh_settings(scram_broker, kafka_security_protocol="SASL_PLAINTEXT",
                       kafka_sasl_mechanism="SCRAM-SHA-256", kafka_sasl_username="notx",
                       kafka_sasl_password=PASSWORD)  # fmt: skip
    await ensure_topics(s)  # the topic and group ACLs are there
    w = Worker(s, sensitive_model, broker_has_transactions=True)
    with pytest.raises(BrokerError, match="refused this worker a transactional producer"):
        await asyncio.wait_for(w.run(asyncio.Event()), 60)
    assert w.exactly_once  # not silently downgraded


async def test_the_worker_delivers_exactly_once_with_a_client_certificate(
    mtls_broker, sensitive_model, small_stream
):
    _, _, segs = small_stream
    crt, key, _ = mtls_broker.certs.client("svc")
    s = fresh_settings(mtls_broker, kafka_security_protocol="SSL", kafka_ssl_cafile=mtls_broker.ca_file,
                       kafka_ssl_certfile=crt, kafka_ssl_keyfile=key)  # fmt: skip
    await _delivered_exactly_once(s, sensitive_model, segs)
    with pytest.raises(BrokerTlsError, match="requires a client certificate"):
        await ensure_topics(s.model_copy(update={"kafka_ssl_certfile": None, "kafka_ssl_keyfile": None}))


def test_a_missing_client_certificate_or_the_wrong_protocol_is_one_line_that_says_so(mtls_broker, tmp_path):
    base = {"GOPWATCH_KAFKA_BOOTSTRAP": mtls_broker.bootstrap, "GOPWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
            "GOPWATCH_KAFKA_SSL_CAFILE": str(mtls_broker.ca_file)}  # fmt: skip
    alien, key, _ = make_certificates(tmp_path, ("svc",)).client("svc")  # another authority's
    cases = {
        "it requires a client certificate": base,
        f"it did not accept the client certificate {alien}": base
        | {"GOPWATCH_KAFKA_SSL_CERTFILE": str(alien), "GOPWATCH_KAFKA_SSL_KEYFILE": str(key)},
        "its listener may expect another protocol than PLAINTEXT": base
        | {"GOPWATCH_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"},
    }
    for says, env in cases.items():
        r = run("topics", env=env)
        assert r.returncode == 2 and says in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "no Kafka broker answered" not in r.stderr


def test_a_client_key_under_a_password(mtls_broker, tmp_path):
    """The key is read with GOPWATCH_KAFKA_SSL_PASSWORD; without it, or with a wrong one, one line
    says so (never a pass-phrase prompt on the terminal), and the password is in no output."""
    crt, key, _ = mtls_broker.certs.client("svc")
    locked = tmp_path / "svc.key"
    subprocess.run(["openssl", "pkcs8", "-topk8", "-in", str(key), "-out", str(locked), "-v2", "aes-256-cbc",
                    "-passout", f"pass:{PASSWORD}"], check=True, capture_output=True)  # fmt: skip
    env = {"GOPWATCH_KAFKA_BOOTSTRAP": mtls_broker.bootstrap, "GOPWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
           "GOPWATCH_KAFKA_SSL_CAFILE": str(mtls_broker.ca_file), "GOPWATCH_KAFKA_SSL_CERTFILE": str(crt),
           "GOPWATCH_KAFKA_SSL_KEYFILE": str(locked)}  # fmt: skip
    r = run("topics", env=env | {"GOPWATCH_KAFKA_SSL_PASSWORD": PASSWORD})
    assert r.returncode == 0, r.stderr
    assert "gopwatch.segments" in r.stdout and PASSWORD not in r.stdout + r.stderr
    for extra, says in (({}, "set"), ({"GOPWATCH_KAFKA_SSL_PASSWORD": "nope"}, "wrong")):
        r = run("topics", env=env | extra)
        says = f"{says} GOPWATCH_KAFKA_SSL_PASSWORD"
        assert r.returncode == 2 and f"the key {locked} is under a password ({says})" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "pass phrase" not in r.stdout + r.stderr
