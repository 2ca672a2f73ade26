"""deploy/: the container image lints, the compose file and the Kubernetes manifests hold together
and agree with the code (topic configs, settings, probes, the consumer group)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from consumers.clients import topic_specs
from schemas.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
BIN = Path(sys.executable).parent


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _k8s() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in sorted(K8S.glob("*.yaml")):
        if f.name != "kustomization.yaml":
            for d in _docs(f):
                out.setdefault(d["kind"], []).append(d)
    return out


def _named(k: dict[str, list[dict]], kind: str, name: str) -> dict:
    return next(d for d in k[kind] if d["metadata"]["name"] == name)


def _settings(k: dict[str, list[dict]]) -> Settings:
    """The settings a worker pod gets from the ConfigMap and the Secret."""
    env = k["ConfigMap"][0]["data"] | k["Secret"][0]["stringData"]
    return Settings(**{key.removeprefix("GOPWATCH_").lower(): v for key, v in env.items()})


def test_the_containerfile_passes_hadolint():
    r = subprocess.run([str(BIN / "hadolint"), str(DEPLOY / "Containerfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (DEPLOY / "Containerfile").read_text()
    assert "ARG BASE=" in text and text.count("FROM ") == 2  # the base is an argument; two stages
    assert "USER 10001" in text and "HEALTHCHECK" in text and 'ENTRYPOINT ["gopwatch"]' in text
    ignore = (DEPLOY.parent / ".dockerignore").read_text().split()
    assert ignore[0 if ignore[0] == "*" else ignore.index("*")] == "*" and "!models/" in ignore


def test_the_shell_scripts_pass_shellcheck():
    """`make image`'s builder and CI's installer: the scripts a platform team runs as root."""
    scripts = [DEPLOY / "image.sh", DEPLOY.parent / ".ci" / "run"]
    r = subprocess.run([str(BIN / "shellcheck"), *map(str, scripts)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    image = scripts[0].read_text()
    # the build is smoke-tested, not only built: a broker, a served stream, an event, a clean stop
    for step in ("podman build", "broker start", "/readyz", "healthcheck run", "podman stop"):
        assert step in image, step


def test_core_manifests_validate_against_the_kubernetes_schemas():
    builtin = ("v1", "apps", "policy")  # the rest (KEDA, Strimzi, Prometheus Operator) are CRDs
    core = [f for f in sorted(K8S.glob("*.yaml")) if all(d["apiVersion"].split("/")[0] in builtin
                                                         for d in _docs(f))]  # fmt: skip
    assert {f.name for f in core} >= {
        "deployment.yaml",
        "configmap.yaml",
        "secret.yaml",
        "pdb.yaml",
        "service.yaml",
        "console.yaml",
        "screener.yaml",
    }
    r = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "--quiet", *map(str, core)],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_kustomization_lists_every_manifest():
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {f.name for f in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_the_configmap_and_secret_are_valid_settings_and_the_deployment_uses_them():
    k = _k8s()
    s = _settings(k)
    assert s.metrics_host == "0.0.0.0" and s.consumer_group == "gopwatch-workers"
    pod = _named(k, "Deployment", "gopwatch-worker")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert {e.get("configMapRef", e.get("secretRef"))["name"] for e in c["envFrom"]} == {
        k["ConfigMap"][0]["metadata"]["name"], k["Secret"][0]["metadata"]["name"]}  # fmt: skip
    assert (
        c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    )
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["metrics"]
    assert port == s.metrics_port
    assert pod["terminationGracePeriodSeconds"] >= s.transaction_timeout_ms / 1000  # a batch plus its commit
    assert c["resources"]["requests"]["cpu"] == str(s.workers)  # one core per engine process
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user


def test_the_console_and_the_screening_tier_are_deployed_with_the_same_settings():
    k = _k8s()
    s = _settings(k)
    console = _named(k, "Deployment", "gopwatch-console")["spec"]["template"]["spec"]["containers"][0]
    assert (
        console["args"][0] == "console"
        and {"name": "GOPWATCH_CONSOLE_HOST", "value": "0.0.0.0"} in console["env"]
    )
    assert {p["name"]: p["containerPort"] for p in console["ports"]}["http"] == s.console_port
    assert console["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert (
        _named(k, "Service", "gopwatch-console")["spec"]["type"] == "ClusterIP"
    )  # behind the platform's proxy
    screener = _named(k, "Deployment", "gopwatch-screener")["spec"]["template"]["spec"]["containers"][0]
    assert screener["args"] == ["snapshots", "serve"]
    port = {p["name"]: p["containerPort"] for p in screener["ports"]}["metrics"]
    assert port == s.screening_metrics_port != s.metrics_port
    assert screener["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert screener["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    mon = _named(k, "ServiceMonitor", "gopwatch-screener")["spec"]
    svc = _named(k, "Service", "gopwatch-screener-metrics")["spec"]
    assert mon["selector"]["matchLabels"] == svc["selector"] and svc["ports"][0]["port"] == port
    for c in (console, screener):
        assert [e.get("configMapRef", e.get("secretRef"))["name"] for e in c["envFrom"]] == [
            "gopwatch-settings", "gopwatch-kafka-credentials"]  # fmt: skip


def test_keda_scales_on_the_groups_lag_up_to_the_partition_count():
    k = _k8s()
    s = _settings(k)
    so = k["ScaledObject"][0]["spec"]
    trig = so["triggers"][0]
    assert trig["type"] == "kafka" and trig["metadata"]["consumerGroup"] == s.consumer_group
    assert trig["metadata"]["topic"] == s.topic_segments and int(trig["metadata"]["lagThreshold"]) > 0
    assert so["maxReplicaCount"] == s.partitions and so["scaleTargetRef"]["name"] == "gopwatch-worker"
    assert trig["authenticationRef"]["name"] == k["TriggerAuthentication"][0]["metadata"]["name"]
    mon = k["ServiceMonitor"][0]["spec"]
    assert (
        mon["endpoints"][0]["port"] == "metrics"
        and mon["selector"]["matchLabels"]
        == _named(k, "Service", "gopwatch-worker-metrics")["spec"]["selector"]
    )


def test_strimzi_topics_carry_the_topics_real_configs():
    k = _k8s()
    parts = int(k["ConfigMap"][0]["data"]["GOPWATCH_PARTITIONS"])
    want = {t.name: t for t in topic_specs(Settings(partitions=parts))}
    got = {d["spec"]["topicName"]: d["spec"] for d in k["KafkaTopic"]}
    assert set(got) == set(want)
    for name, spec in got.items():
        assert spec["partitions"] == want[name].partitions
        assert {c: v for c, v in spec["config"].items() if c != "min.insync.replicas"} == want[name].config
    assert got["gopwatch.kb"]["config"]["cleanup.policy"] == "compact"
    assert got["gopwatch.state"]["config"]["cleanup.policy"] == "compact"


def test_compose_runs_kafka_topics_workers_a_publisher_prometheus_and_grafana():
    c = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    svc = c["services"]
    assert set(svc) == {
        "kafka",
        "topics",
        "worker",
        "publisher",
        "screener",
        "console",
        "prometheus",
        "grafana",
    }
    assert svc["screener"]["command"] == ["snapshots", "serve"] and svc["console"]["command"][0] == "console"
    assert svc["topics"]["command"] == ["topics"] and svc["worker"]["command"] == ["serve"]
    assert "container_name" not in svc["worker"] and "ports" not in svc["worker"]  # --scale worker=3 works
    assert svc["worker"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert svc["worker"]["environment"]["GOPWATCH_METRICS_HOST"] == "0.0.0.0"
    assert svc["worker"]["build"]["dockerfile"] == "deploy/Containerfile"
    for name in ("prometheus", "grafana", "console"):  # host ports on loopback only
        assert all(p.startswith("127.0.0.1:") for p in svc[name]["ports"])
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    sd = prom["scrape_configs"][0]["dns_sd_configs"][0]
    assert sd["names"] == ["worker"] and sd["port"] == Settings().metrics_port
    sd = prom["scrape_configs"][1]["dns_sd_configs"][0]
    assert sd["names"] == ["screener"] and sd["port"] == Settings().screening_metrics_port
    assert svc["screener"]["environment"]["GOPWATCH_METRICS_HOST"] == "0.0.0.0"


def test_the_grafana_dashboard_is_current_and_covers_the_operators_questions():
    sys.path.insert(0, str(DEPLOY / "grafana"))
    try:
        from make_dashboard import OUT, dashboard
    finally:
        sys.path.pop(0)
    assert json.loads(OUT.read_text()) == json.loads(json.dumps(dashboard())), (
        "run deploy/grafana/make_dashboard.py"
    )
    exprs = " ".join(t["expr"] for p in dashboard()["panels"] for t in p["targets"])  # type: ignore[index]
    for metric in ("gopwatch_lag_seconds", "gopwatch_segments_total", "gopwatch_events_total",
                   "gopwatch_degraded_streams", "gopwatch_segment_processing_seconds_bucket",
                   "gopwatch_dead_letters_total"):  # fmt: skip
        assert metric in exprs
    from consumers.metrics import WorkerMetrics

    names = {m.name for m in WorkerMetrics().registry.collect()}
    for metric in (
        "gopwatch_lag_seconds",
        "gopwatch_degraded_streams",
        "gopwatch_ready",
        "gopwatch_kb_examples",
    ):
        assert metric in names  # the dashboard reads metrics the worker has
