"""Apache Kafka 4.x in KRaft mode, one node (broker + controller), from Maven Central jars.

The jars are resolved once with Maven into ``~/.cache/gopwatch/kafka-<version>/jars`` (override
with ``GOPWATCH_CACHE_DIR``); ``gopwatch broker fetch`` does it ahead of time. Storage is
formatted on the first start of a work directory; later starts on the same directory keep the
data (a broker restart).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from consumers.brokers.base import LOOPBACK, EmbeddedBroker, free_port
from consumers.brokers.tls import Certificates, make_certificates
from consumers.errors import BrokerError, JarCacheError

KAFKA_VERSION = "4.1.1"
SCALA = "2.13"
LOG4J_VERSION = "2.24.3"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.gopwatch</groupId><artifactId>kafka-broker-jars</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J = """status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def cache_dir() -> Path:
    root = Path(os.environ.get("GOPWATCH_CACHE_DIR", Path.home() / ".cache" / "gopwatch"))
    return root / f"kafka-{KAFKA_VERSION}"


def jar_dir() -> Path:
    return cache_dir() / "jars"


JAR_SET = f"{KAFKA_VERSION} broker+tools"  # what a complete cache holds; a new set refetches


def jars_ready() -> bool:
    marker = jar_dir() / ".complete"
    return marker.exists() and marker.read_text() == JAR_SET


def fetch_jars(quiet: bool = True) -> Path:
    """Resolve the broker's jars from Maven Central into the cache (idempotent)."""
    target = jar_dir()
    if jars_ready():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JarCacheError("Maven (mvn) is not installed; install it (apt-get install maven) and retry")
    if shutil.which("java") is None:
        raise JarCacheError(
            "Java is not installed; install a JDK 17+ (apt-get install openjdk-17-jre-headless)"
        )
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(_POM.format(scala=SCALA, kafka=KAFKA_VERSION, log4j=LOG4J_VERSION))
        cmd = [
            mvn,
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={target}",
            "-DincludeScope=runtime",
        ]
        if quiet:
            cmd.insert(1, "-q")
        res = subprocess.run(cmd, capture_output=quiet, text=True, check=False)
    if res.returncode != 0:
        tail = (res.stdout or "")[-400:] if quiet else ""
        raise JarCacheError(
            f"Maven could not resolve Kafka {KAFKA_VERSION} jars (exit {res.returncode}) {tail}"
        )
    (target / ".complete").write_text(JAR_SET)
    return target


def _cluster_id() -> str:
    """A random cluster id; never one that starts with '-', which the storage tool's argument parser
    would take for an option (1 in 64 ids did; Kafka's own Uuid.randomUuid avoids them the same way)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


SCRAM = "SCRAM-SHA-256"  # the broker's own (inter-broker) mechanism
SCRAM_MECHANISMS = (SCRAM, "SCRAM-SHA-512")  # both offered to clients, every user has both
ADMIN = ("admin", "admin-secret")  # the broker's own principal on a SCRAM listener (a super user)


class KafkaBroker(EmbeddedBroker):
    """``scram_users``: serve clients on a SASL_PLAINTEXT listener with SCRAM-SHA-256 and -512,
    for these users and passwords (plus the broker's own admin, a super user), instead of
    PLAINTEXT, with ACLs enforced: a user may do only what :meth:`allow` granted. With ``tls``
    too, the listener is SASL_SSL, with a certificate from a throwaway authority
    (:attr:`certs`). ``tls_users`` instead: an SSL listener that requires a client certificate,
    one per name (``certs.client(name)``), the certificate's CN being the principal ACLs name."""

    def __init__(self, workdir: Path, port: int = 0, heap_mb: int = 512,
                 scram_users: dict[str, str] | None = None, tls: bool = False,
                 tls_users: tuple[str, ...] = ()) -> None:  # fmt: skip
        super().__init__(kind="kafka", workdir=workdir, port=port, supports_transactions=True)
        if tls and scram_users is None:
            raise ValueError("tls needs scram_users: the TLS listener is SASL_SSL")
        if tls_users and scram_users is not None:
            raise ValueError("one of scram_users and tls_users")
        self.controller_port = 0
        self.heap_mb = heap_mb
        self.scram_users = scram_users
        self.tls = tls or bool(tls_users)
        self.tls_users = tls_users
        self._certs: Certificates | None = None

    @property
    def protocol(self) -> str:
        """The clients' security protocol on this broker's listener."""
        if self.tls_users:
            return "SSL"
        if self.scram_users is None:
            return "PLAINTEXT"
        return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"

    @property
    def certs(self) -> Certificates:
        """This broker's authority and certificates (made on first use)."""
        if self._certs is None:
            self._certs = make_certificates(self.workdir / "tls", (ADMIN[0], *self.tls_users))
        return self._certs

    @property
    def ca_file(self) -> Path | None:
        return self.certs.ca if self.tls else None

    def _tls_props(self, prefix: str, keystore: Path | None = None) -> list[str]:
        """Key store and trust store (the broker talks to itself over the same listener)."""
        if not self.tls:
            return []
        stores = {"keystore": keystore or self.certs.server, "truststore": self.certs.ca}
        return [
            f"{prefix}ssl.{k}.{x}" for k, path in stores.items() for x in ("type=PEM", f"location={path}")
        ]

    def _listener_props(self) -> list[str]:
        controller = f"CONTROLLER://{LOOPBACK}:{self.controller_port}"
        name = self.protocol
        common = [
            f"listeners={name}://{LOOPBACK}:{self.port},{controller}",
            f"advertised.listeners={name}://{LOOPBACK}:{self.port}",
            f"listener.security.protocol.map={name}:{name},CONTROLLER:PLAINTEXT",
            f"inter.broker.listener.name={name}",
        ]
        if name == "PLAINTEXT":
            return common
        acls = "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer"
        user, password = ADMIN
        if self.tls_users:  # principals are certificate CNs; the broker is its server certificate's
            return [
                *common,
                *self._tls_props("listener.name.ssl."),
                "listener.name.ssl.ssl.client.auth=required",
                "ssl.principal.mapping.rules=RULE:^CN=([^,]+)$/$1/,DEFAULT",
                acls,
                f"super.users=User:{user};User:{LOOPBACK};User:ANONYMOUS",
            ]
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{user}" password="{password}";'
        )
        return [
            *common,
            f"sasl.enabled.mechanisms={','.join(SCRAM_MECHANISMS)}",
            f"sasl.mechanism.inter.broker.protocol={SCRAM}",
            *(f"listener.name.{name.lower()}.{m.lower()}.sasl.jaas.config={jaas}" for m in SCRAM_MECHANISMS),
            *self._tls_props(f"listener.name.{name.lower()}."),
            acls,
            f"super.users=User:{user};User:ANONYMOUS",  # the admin, and the plaintext controller listener
        ]

    def allow(self, user: str, **prefixes: str) -> None:
        """Grant ``user`` every operation on resources whose names start with the given prefixes,
        e.g. ``topic="t"``, ``group="g"``, ``transactional_id="g"`` (Kafka's own ACL tool)."""
        user_, password = ADMIN
        admin = self.workdir / "admin.properties"
        if self.tls_users:  # the admin's client certificate
            lines = self._tls_props("", keystore=self.certs.client(user_)[2])
        else:
            lines = [f"sasl.mechanism={SCRAM}",
                     "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
                     f'username="{user_}" password="{password}";',
                     *(x for x in self._tls_props("") if "truststore" in x)]  # fmt: skip
        admin.write_text("".join(f"{x}\n" for x in [f"security.protocol={self.protocol}", *lines]))
        for kind, prefix in prefixes.items():
            res = subprocess.run(
                self._java("org.apache.kafka.tools.AclCommand", "--bootstrap-server", self.bootstrap,
                           "--command-config", str(admin), "--add", "--allow-principal", f"User:{user}",
                           "--operation", "All", f"--{kind.replace('_', '-')}", prefix,
                           "--resource-pattern-type", "prefixed"),
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if res.returncode != 0:
                raise BrokerError(f"adding an ACL failed: {res.stdout[-300:]} {res.stderr[-300:]}")

    def _scram_args(self) -> list[str]:
        if self.scram_users is None:
            return []
        users = {ADMIN[0]: ADMIN[1], **self.scram_users}
        return [
            a
            for u, p in users.items()
            for m in SCRAM_MECHANISMS
            for a in ("--add-scram", f"{m}=[name={u},password={p}]")
        ]

    @property
    def _props(self) -> Path:
        return self.workdir / "server.properties"

    def _java(self, main: str, *args: str) -> list[str]:
        java = shutil.which("java") or "java"
        return [
            java,
            f"-Xmx{self.heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            f"{jar_dir()}/*",
            main,
            *args,
        ]

    def prepare(self) -> None:
        if not jars_ready():
            fetch_jars()
        if not self.controller_port:
            self.controller_port = free_port()
        data = self.workdir / "data"
        (self.workdir / "log4j2.properties").write_text(_LOG4J.format(log=self.log_path))
        self._props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{LOOPBACK}:{self.controller_port}",
                    *self._listener_props(),
                    "controller.listener.names=CONTROLLER",
                    f"log.dirs={data}",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "transaction.state.log.num.partitions=4",
                    "group.initial.rebalance.delay.ms=0",
                    f"message.max.bytes={MAX_MESSAGE_BYTES}",
                    f"replica.fetch.max.bytes={MAX_MESSAGE_BYTES}",
                    "log.cleaner.backoff.ms=1000",
                    "auto.create.topics.enable=true",
                    "",
                ]
            )
        )
        if not (data / "meta.properties").exists():
            res = subprocess.run(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    _cluster_id(),
                    "-c",
                    str(self._props),
                    *self._scram_args(),
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if res.returncode != 0:
                raise JarCacheError(
                    f"formatting Kafka storage failed: {res.stdout[-300:]} {res.stderr[-300:]}"
                )

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self._props))
