"""The Kubernetes overlays (deploy/k8s/overlays/dev, prod), built by kustomize and validated
strictly by kubeconform against the Kubernetes schemas and the operators' CRD schemas, offline
(scripts/validate_k8s.py; the tools come from deploy/local/k8s-tools.sh), then checked for
policy: hardened pods, a disruption budget and a network policy for every Deployment, topics
with three replicas, least-privilege Kafka users matching the ACLs declared in code,
replicated and backed-up PostgreSQL, alerts with runbooks. Generated files are compared with
what their scripts generate now (no drift)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
K8S_DIR = REPO / "deploy" / "k8s"
SCRIPTS = REPO / "scripts"
RUNBOOKS = REPO / "docs" / "runbooks"
GUIDE = REPO / "docs" / "deploy-kubernetes.md"
OVERLAYS = ("dev", "prod")
SERVICES = ("referral", "capacity", "indicators", "notify", "gateway")
# Secrets the operators create themselves: the KafkaUsers' (named like the user), the Kafka
# cluster's CA certificate (Strimzi), the database cluster's CA (CloudNativePG).
KAFKA_PRINCIPALS = ("referral", "capacity", "indicators", "notify")
OPERATOR_SECRETS = {*KAFKA_PRINCIPALS, "reflexe-cluster-ca-cert", "reflexe-db-ca"}


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"reflexe_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@cache
def validate_k8s():
    return _script("validate_k8s")


@cache
def built_text(overlay: str) -> str:
    return validate_k8s().build(K8S_DIR / "overlays" / overlay)


@cache
def built(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(d for d in yaml.safe_load_all(built_text(overlay)) if d)


def of_kind(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in built(overlay) if d["kind"] == kind]


def one(overlay: str, kind: str, name: str) -> dict[str, Any]:
    found = [d for d in of_kind(overlay, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{overlay}: {len(found)} {kind} named {name}"
    return found[0]


def pod_templates(overlay: str) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{d['kind']} {d['metadata']['name']}", d["spec"]["template"]) for d in built(overlay)
            if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    match = selector.get("matchLabels", {})
    assert not selector.get("matchExpressions"), "selectors here use matchLabels only"
    return bool(match) and match.items() <= labels.items()


# --------------------------------------------------------------------------- validation


def test_the_overlays_are_the_expected_ones() -> None:
    assert {p.name for p in validate_k8s().OVERLAYS} == set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_and_validates_strictly_against_kubernetes_and_crd_schemas(overlay: str) -> None:
    code, results = validate_k8s().kubeconform(built_text(overlay))
    invalid = [f"{r['kind']} {r['name']}: {r['status']} {r.get('msg', '')}" for r in results
               if r["status"] != "statusValid"]
    assert not invalid, "\n".join(invalid)
    assert code == 0
    assert len(results) == len(built(overlay)), "every resource was validated (none skipped)"
    kinds = {r["kind"] for r in results}
    assert {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "Cluster", "Database", "PodMonitor",
            "PrometheusRule", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Ingress", "Job"} <= kinds


def test_validation_refuses_unknown_fields_and_unknown_kinds() -> None:
    """The validation can fail: a misspelt field of a Kubernetes kind or of an operator's kind,
    a wrong type, and a kind without a schema are each refused."""
    broken = """apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  replica: 2
  selector: {matchLabels: {a: b}}
  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i}]}}
---
apiVersion: kafka.strimzi.io/v1
kind: KafkaTopic
metadata: {name: t}
spec: {partitions: 6, replica: 3}
---
apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata: {name: c}
spec: {instances: "three"}
---
apiVersion: example.invalid/v1
kind: Unknown
metadata: {name: u}
"""
    code, results = validate_k8s().kubeconform(broken)
    assert code != 0
    status = {r["kind"]: (r["status"], r.get("msg", "")) for r in results}
    assert status["Deployment"][0] == "statusInvalid" and "replica" in status["Deployment"][1]
    assert status["KafkaTopic"][0] == "statusInvalid" and "replica" in status["KafkaTopic"][1]
    assert status["Cluster"][0] == "statusInvalid"
    assert status["Unknown"][0] == "statusError" and "could not find schema" in status["Unknown"][1]


def _shared_crds() -> Path | None:
    for candidate in (REPO.parent / "shared", REPO.parent.parent / "shared"):
        if (candidate / "reference" / "k8s-crds").is_dir():
            return candidate / "reference" / "k8s-crds"
    return None


def test_crd_schemas_are_derived_from_the_operators_crds_with_their_notice() -> None:
    notice = (K8S_DIR / "schemas" / "NOTICE").read_text(encoding="utf-8")
    assert "Apache License, Version 2.0" in notice
    for project in ("Strimzi", "CloudNativePG", "Prometheus Operator"):
        assert project in notice
    committed = {p.relative_to(K8S_DIR / "schemas") for p in (K8S_DIR / "schemas").glob("*/*.json")}
    for group in ("kafka.strimzi.io", "postgresql.cnpg.io", "monitoring.coreos.com"):
        assert any(str(p).startswith(group) for p in committed), f"no schema of {group}"
    crds = _shared_crds()
    if crds is None:
        pytest.skip("the operators' CRDs (shared/reference/k8s-crds) are not beside this clone")
    derived = _script("gen_k8s_crd_schemas").derive(crds)
    assert set(derived) == committed, "run scripts/gen_k8s_crd_schemas.py"
    for name, text in derived.items():
        assert (K8S_DIR / "schemas" / name).read_text(encoding="utf-8") == text, f"{name}: run scripts/gen_k8s_crd_schemas.py"


def test_generated_manifests_equal_what_their_sources_generate() -> None:
    generator = _script("gen_k8s_manifests")
    files = generator.render()
    assert {p.name for p in files} == {p.name for p in (K8S_DIR / "base" / "generated").glob("*.yaml")}
    for path, text in files.items():
        assert path.read_text(encoding="utf-8") == text, f"{path.relative_to(REPO)}: run scripts/gen_k8s_manifests.py"
    base = yaml.safe_load((K8S_DIR / "base" / "kustomization.yaml").read_text(encoding="utf-8"))
    for path in files:
        assert f"generated/{path.name}" in base["resources"], f"{path.name} is not applied"


def test_the_tools_script_is_valid_bash_and_pins_its_versions() -> None:
    script = REPO / "deploy" / "local" / "k8s-tools.sh"
    assert os.access(script, os.X_OK)
    text = script.read_text(encoding="utf-8")
    assert re.search(r"KUSTOMIZE_VERSION=v\d+\.\d+\.\d+", text) and re.search(r"KUBECONFORM_VERSION=v\d+\.\d+\.\d+", text)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    tools = validate_k8s().tools()
    assert tools.is_relative_to(validate_k8s().cache_dir()), "installed into the project's cache dir"
    assert (tools / "kustomize").is_file() and (tools / "kubeconform").is_file()


# --------------------------------------------------------------------------- policy: pods


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_hardened_and_bounded(overlay: str) -> None:
    templates = pod_templates(overlay)
    assert len(templates) >= 2 * len(SERVICES), "the services' Deployments and migration Jobs"
    for what, template in templates:
        pod = template["spec"]
        pod_sc = pod.get("securityContext", {})
        assert pod.get("automountServiceAccountToken") is False, f"{what}: no API token in the pod"
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            where = f"{what} / {container['name']}"
            sc = container.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("privileged", False), where
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{where}: resources.{bound}"
            assert not container["image"].endswith(":latest") and ":" in container["image"], where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_a_disruption_budget_and_a_network_policy_of_its_own(overlay: str) -> None:
    deployments = of_kind(overlay, "Deployment")
    assert {d["metadata"]["name"] for d in deployments} == set(SERVICES)
    budgets = of_kind(overlay, "PodDisruptionBudget")
    policies = of_kind(overlay, "NetworkPolicy")
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if selects(b["spec"]["selector"], labels)]
        assert len(covering) == 1, f"{name}: {len(covering)} PodDisruptionBudgets"
        budget = covering[0]["spec"]
        assert budget.get("maxUnavailable") == 1 or budget.get("minAvailable", 0) < deployment["spec"].get("replicas", 1), (
            f"{name}: its budget must let a drain evict a pod")
        own = [p for p in policies if selects(p["spec"]["podSelector"], labels)]
        assert own, f"{name}: no NetworkPolicy selects it"
        assert any({"Ingress", "Egress"} <= set(p["spec"]["policyTypes"]) for p in own), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_access_is_denied_by_default_then_allowed_per_need(overlay: str) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(overlay, "NetworkPolicy")}
    deny = policies["default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    dns = policies["allow-dns"]
    assert dns["podSelector"] == {} and {p["port"] for rule in dns["egress"] for p in rule["ports"]} == {53}

    def ports(rules: list[dict[str, Any]], peer: str) -> set[int]:
        return {p["port"] for rule in rules for p in rule.get("ports", [])
                if any(peer in yaml.safe_dump(to) for to in rule.get("to", rule.get("from", [])))}

    for service in SERVICES:
        deployment = one(overlay, "Deployment", service)
        http = next(p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
                    if p["name"] == "http")
        spec = policies[service]
        assert ports(spec["egress"], "cnpg.io/cluster: reflexe-db") == {5432}, service
        assert ports(spec["egress"], "strimzi.io/cluster: reflexe") == ({9093} if service in KAFKA_PRINCIPALS else set())
        assert ports(spec["ingress"], "ingress-nginx") == {http}, f"{service}: the ingress controller reaches http only"
        assert ports(spec["ingress"], "prometheus") == {http}, f"{service}: Prometheus scrapes http"
    # Inside the namespace, only the calls the settings configure (notify's desk page, the gateway).
    assert ports(policies["referral"]["ingress"], "name: notify") == {8001}
    assert ports(policies["referral"]["ingress"], "name: gateway") == {8001}
    assert ports(policies["capacity"]["ingress"], "name: notify") == {8002}
    assert not ports(policies["indicators"]["ingress"], "name: notify")
    labels = one(overlay, "Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    assert "reflexe.fr/kafka-client" not in labels, "the gateway uses no Kafka"
    listener = one(overlay, "Kafka", "reflexe")["spec"]["kafka"]["listeners"][0]
    assert listener["networkPolicyPeers"] == [{"podSelector": {"matchLabels": {"reflexe.fr/kafka-client": "true"}}}]


def test_pods_spread_over_nodes_and_scale_within_the_partitions() -> None:
    from reflexe_common.topics import DEPARTMENT_PARTITIONS

    for deployment in of_kind("prod", "Deployment"):
        name = deployment["metadata"]["name"]
        keys = {c["topologyKey"]: c for c in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]}
        assert {"kubernetes.io/hostname", "topology.kubernetes.io/zone"} <= set(keys), name
        if name != "gateway":
            assert deployment["spec"]["replicas"] >= 2, f"{name}: two pods in production"
            assert keys["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule", name
    autoscalers = of_kind("prod", "HorizontalPodAutoscaler")
    assert {a["spec"]["scaleTargetRef"]["name"] for a in autoscalers} == {"referral", "capacity", "notify"}
    for autoscaler in autoscalers:
        assert 2 <= autoscaler["spec"]["minReplicas"] <= autoscaler["spec"]["maxReplicas"] <= DEPARTMENT_PARTITIONS
        assert autoscaler["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_the_ingress_serves_every_http_service_over_tls() -> None:
    ingress = one("prod", "Ingress", "reflexe")["spec"]
    tls_hosts = {h for entry in ingress["tls"] for h in entry["hosts"]}
    backends = {}
    for rule in ingress["rules"]:
        assert rule["host"] in tls_hosts, f"{rule['host']} has no certificate"
        for path in rule["http"]["paths"]:
            backends[rule["host"]] = path["backend"]["service"]
    assert {b["name"] for b in backends.values()} == set(SERVICES)
    assert all(b["port"] == {"name": "http"} for b in backends.values()), "never the MLLP port"


# --------------------------------------------------------------------------- policy: settings, secrets


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_verify_topics_and_migrations_instead_of_creating_them(overlay: str) -> None:
    config = {d["metadata"]["name"].rsplit("-", 1)[0] if "reflexe-config-" in d["metadata"]["name"] else d["metadata"]["name"]: d
              for d in of_kind(overlay, "ConfigMap")}["reflexe-config"]["data"]
    assert config["REFLEXE_KAFKA_CREATE_TOPICS"] == "false"
    assert config["REFLEXE_MIGRATE_AT_START"] == "false"
    assert config["KAFKA_BOOTSTRAP"] == "reflexe-kafka-bootstrap:9093", "the Strimzi cluster's TLS listener"
    assert config["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and config["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    for service in SERVICES:
        pod = one(overlay, "Deployment", service)["spec"]["template"]["spec"]
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        url = env["DATABASE_URL"]["value"]
        assert url.startswith(f"postgresql://{service}@reflexe-db-rw:5432/reflexe?"), f"{service}: its own role"
        assert "sslmode=verify-full" in url
        assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": f"reflexe-db-{service}", "key": "password"}
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert "/etc/reflexe/postgres-ca" in mounts
        if service in KAFKA_PRINCIPALS:
            assert env["KAFKA_USERNAME"]["value"] == service
            assert env["KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": service, "key": "password"}
            assert config["KAFKA_SSL_CAFILE"].startswith("/etc/reflexe/kafka-ca/")
        else:
            assert "KAFKA_USERNAME" not in env and "KAFKA_PASSWORD" not in env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrations_run_once_per_release_in_jobs_with_the_release_image(overlay: str) -> None:
    jobs = {j["metadata"]["name"]: j for j in of_kind(overlay, "Job")}
    assert set(jobs) == {f"reflexe-migrate-{s}" for s in SERVICES}
    for service in SERVICES:
        job = jobs[f"reflexe-migrate-{service}"]["spec"]["template"]["spec"]
        deployment = one(overlay, "Deployment", service)["spec"]["template"]["spec"]["containers"][0]
        (container,) = job["containers"]
        assert container["command"] == ["python", "-m", "reflexe_common.migrate", service]
        assert container["image"] == deployment["image"], f"{service}: the migration Job runs another release"
        env = {e["name"]: e for e in container["env"]}
        deployment_env = {e["name"]: e for e in deployment["env"]}
        assert env["DATABASE_URL"] == deployment_env["DATABASE_URL"] and env["PGPASSWORD"] == deployment_env["PGPASSWORD"]
        assert job["restartPolicy"] == "OnFailure"
    from reflexe_common.migrate import SERVICE_MIGRATIONS

    assert set(SERVICE_MIGRATIONS) == set(SERVICES)


def _secret_names(overlay: str) -> dict[str, set[str]]:
    """Secret -> the resources that read it."""
    names: dict[str, set[str]] = {}

    def add(name: str, reader: str) -> None:
        names.setdefault(name, set()).add(reader)

    for what, template in pod_templates(overlay):
        for container in template["spec"]["containers"]:
            for env in container.get("env", []):
                if "secretKeyRef" in env.get("valueFrom", {}):
                    add(env["valueFrom"]["secretKeyRef"]["name"], what)
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    add(source["secretRef"]["name"], what)
        for volume in template["spec"].get("volumes", []):
            if "secret" in volume:
                add(volume["secret"]["secretName"], what)
    cluster = one(overlay, "Cluster", "reflexe-db")["spec"]
    for role in cluster["managed"]["roles"]:
        add(role["passwordSecret"]["name"], "Cluster reflexe-db")
    credentials = cluster.get("backup", {}).get("barmanObjectStore", {}).get("s3Credentials", {})
    for ref in credentials.values():
        add(ref["name"], "Cluster reflexe-db backup")
    for ingress in of_kind(overlay, "Ingress"):
        for entry in ingress["spec"]["tls"]:
            add(entry["secretName"], "Ingress")
    return names


def _expanded_shell(text: str) -> str:
    """The guide's commands with each `for s in A B; do ... done` loop unrolled."""
    def unroll(match: re.Match[str]) -> str:
        return "\n".join(match.group(2).replace("$s", value) for value in match.group(1).split())

    return re.sub(r"for s in ([^;]+); do\n(.*?)\ndone", unroll, text, flags=re.S)


def test_the_guide_loops_are_unrolled_for_the_secret_check() -> None:
    text = "for s in a b; do\n  kubectl create secret generic x-$s\ndone\n"
    assert "create secret generic x-a" in _expanded_shell(text) and "create secret generic x-b" in _expanded_shell(text)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_applied_and_each_one_read_is_made_by_an_operator_or_documented(overlay: str) -> None:
    assert not of_kind(overlay, "Secret"), "Secrets are created out of band, never from this repository"
    for kustomization in K8S_DIR.rglob("kustomization.yaml"):
        declared = yaml.safe_load(kustomization.read_text(encoding="utf-8"))
        applied = [*declared.get("resources", []), *(p.get("path", "") for p in declared.get("patches", []))]
        assert not [r for r in applied if "example" in r], f"{kustomization} applies an example"
    guide = _expanded_shell(GUIDE.read_text(encoding="utf-8"))
    examples = {d["metadata"]["name"]: d for path in (K8S_DIR / "examples").glob("*.yaml")
                for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d and d["kind"] == "Secret"}
    for name, readers in _secret_names(overlay).items():
        if name in OPERATOR_SECRETS:
            continue
        assert re.search(rf"create secret \w+ {re.escape(name)}(\s|$)", guide), (
            f"docs/deploy-kubernetes.md does not say how to create the Secret {name} ({sorted(readers)})")
        if name != "reflexe-tls":  # a certificate: cert-manager or `create secret tls`
            assert name in examples, f"deploy/k8s/examples/ does not show the keys of {name}"
    for secret in examples.values():
        for value in secret.get("stringData", {}).values():
            if "password" in str(value).lower() or "change-me" in str(value).lower():
                assert "EXAMPLE" in value, f"{secret['metadata']['name']}: example values say so"


# --------------------------------------------------------------------------- policy: Kafka


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_declared_topic_is_a_kafka_topic_with_its_partitions_and_retention(overlay: str) -> None:
    from reflexe_common.topics import ALL_TOPICS

    topics = {t["spec"].get("topicName", t["metadata"]["name"]): t["spec"] for t in of_kind(overlay, "KafkaTopic")}
    for declared in ALL_TOPICS:
        spec = topics[declared.name]
        assert spec["partitions"] == declared.partitions
        for key, value in declared.config.items():
            assert spec["config"][key] == value, f"{declared.name}: {key}"
    for topic in of_kind(overlay, "KafkaTopic"):
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "reflexe"


def test_in_production_every_topic_has_three_replicas_two_in_sync() -> None:
    topics = of_kind("prod", "KafkaTopic")
    assert topics
    for topic in topics:
        assert topic["spec"]["replicas"] == 3, topic["metadata"]["name"]
        assert str(topic["spec"]["config"]["min.insync.replicas"]) == "2", topic["metadata"]["name"]
    kafka = one("prod", "Kafka", "reflexe")["spec"]["kafka"]
    assert kafka["config"]["default.replication.factor"] == 3 and kafka["config"]["min.insync.replicas"] == 2
    assert kafka["config"]["auto.create.topics.enable"] is False
    assert kafka["config"]["unclean.leader.election.enable"] is False
    pool = one("prod", "KafkaNodePool", "nodes")["spec"]
    assert pool["replicas"] == 3 and set(pool["roles"]) == {"controller", "broker"}, "KRaft: 3 controllers/brokers"
    listener = kafka["listeners"][0]
    assert listener["tls"] is True and listener["authentication"]["type"] == "scram-sha-512"
    assert len(kafka["listeners"]) == 1, "no plaintext listener"
    assert kafka["authorization"]["type"] == "simple"


def test_kafka_users_have_exactly_the_declared_acls_without_topic_creation() -> None:
    from reflexe_common.kafka_acls import SERVICES as PRINCIPALS, service_acls

    generator = _script("gen_k8s_manifests")
    users = {u["metadata"]["name"]: u["spec"] for u in of_kind("prod", "KafkaUser")}
    assert set(PRINCIPALS) <= set(users)
    for principal in PRINCIPALS:
        spec = users[principal]
        assert spec["authentication"] == {"type": "scram-sha-512"}
        granted = {(rule["resource"]["type"], rule["resource"].get("name", "kafka-cluster"),
                    rule["resource"].get("patternType", "literal"), op)
                   for rule in spec["authorization"]["acls"] for op in rule["operations"]}
        declared = {(generator.RESOURCE_TYPES[a.resource_type], a.resource_name, generator.PATTERNS[a.pattern],
                     generator.OPERATIONS[a.operation]) for a in service_acls(principal) if a.operation != "CREATE"}
        assert granted == declared, f"{principal}: KafkaUser ACLs differ from kafka_acls.py"
        assert not any(op in ("Create", "All", "Alter", "Delete") for *_, op in granted), principal


def test_systems_publishing_on_kafka_get_their_topic_and_a_write_only_user(tmp_path: Path, monkeypatch) -> None:
    generator = _script("gen_k8s_manifests")
    listing = tmp_path / "kafka-systems.txt"
    listing.write_text("# comment\nhospital 340780477\nhad 2A0000014  # Corse-du-Sud\n", encoding="utf-8")
    monkeypatch.setattr(generator, "SYSTEMS_FILE", listing)
    assert generator.systems(listing) == [("hospital", "340780477"), ("had", "2A0000014")]
    documents = list(yaml.safe_load_all(generator.render()[generator.OUT / "kafka-systems.yaml"]))
    documents = [d for d in documents if d]
    users = {d["metadata"]["name"]: d for d in documents if d["kind"] == "KafkaUser"}
    topics = {d["spec"].get("topicName", d["metadata"]["name"]): d for d in documents if d["kind"] == "KafkaTopic"}
    assert set(users) == {"system-340780477", "system-2A0000014"}
    assert set(topics) == {"reflexe.inbound.referrals.v1.340780477", "reflexe.inbound.capacity.v1.2A0000014"}
    assert topics["reflexe.inbound.capacity.v1.2A0000014"]["metadata"]["name"] == "reflexe.inbound.capacity.v1.2a0000014"
    acls = users["system-340780477"]["spec"]["authorization"]["acls"]
    assert acls == [{"resource": {"type": "topic", "name": "reflexe.inbound.referrals.v1.340780477", "patternType": "literal"},
                     "operations": ["Describe", "Write"]}]
    listing.write_text("clinic 340780477\n", encoding="utf-8")
    with pytest.raises(ValueError, match="clinic"):
        generator.systems(listing)
    listing.write_text("hospital 12\n", encoding="utf-8")
    with pytest.raises(ValueError):
        generator.systems(listing)


# --------------------------------------------------------------------------- policy: PostgreSQL


def test_the_database_is_replicated_synchronously_backed_up_and_split_by_service() -> None:
    cluster = one("prod", "Cluster", "reflexe-db")["spec"]
    assert cluster["instances"] == 3
    assert cluster["postgresql"]["synchronous"]["method"] == "any", "quorum replication"
    assert cluster["postgresql"]["synchronous"]["number"] >= 1
    assert cluster["postgresql"]["synchronous"]["dataDurability"] == "required"
    store = cluster["backup"]["barmanObjectStore"]
    assert store["destinationPath"].startswith("s3://") and store["wal"] and store["data"]
    assert cluster["backup"]["retentionPolicy"]
    assert cluster["enableSuperuserAccess"] is False
    (scheduled,) = of_kind("prod", "ScheduledBackup")
    assert scheduled["spec"]["cluster"]["name"] == "reflexe-db" and scheduled["spec"]["method"] == "barmanObjectStore"
    roles = {r["name"]: r for r in cluster["managed"]["roles"]}
    assert set(roles) == set(SERVICES)
    for role in roles.values():
        assert role["login"] is True and not role.get("superuser") and not role.get("createdb")
        assert not role.get("createrole") and not role.get("inRoles"), "a service role owns its schema, nothing more"
    (database,) = of_kind("prod", "Database")
    assert {s["name"]: s["owner"] for s in database["spec"]["schemas"]} == {s: s for s in SERVICES}
    assert database["spec"]["owner"] not in SERVICES, "no service owns the database itself"
    assert database["spec"]["databaseReclaimPolicy"] == "retain"
    assert not of_kind("prod", "Pooler"), "no pooler: advisory locks and LISTEN/NOTIFY need sessions"
    assert (RUNBOOKS / "restore-database.md").is_file()
    dev = one("dev", "Cluster", "reflexe-db")["spec"]
    assert dev["instances"] == 1 and "synchronous" not in dev.get("postgresql", {}), "one instance cannot wait for a standby"


# --------------------------------------------------------------------------- policy: monitoring


def test_every_service_is_scraped_with_the_labels_the_rules_use() -> None:
    monitors = {m["metadata"]["name"]: m["spec"] for m in of_kind("prod", "PodMonitor")}
    for service in SERVICES:
        spec = monitors[service]
        labels = one("prod", "Deployment", service)["spec"]["template"]["metadata"]["labels"]
        assert selects(spec["selector"], labels)
        (endpoint,) = spec["podMetricsEndpoints"]
        assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
        relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
        assert relabel["job"]["replacement"] == "reflexe"
        assert relabel["service"]["sourceLabels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
        assert relabel["instance"]["sourceLabels"] == ["__meta_kubernetes_pod_name"]


def _source_rule_files() -> list[Path]:
    rules_dir = REPO / "deploy" / "prometheus" / "rules"
    return sorted([*rules_dir.glob("*.yml"), *rules_dir.glob("*.yaml")])


def test_prometheus_rules_are_the_rule_files_and_every_alert_has_its_runbook() -> None:
    rules = {r["metadata"]["name"]: r["spec"]["groups"] for r in of_kind("prod", "PrometheusRule")}
    alerts = 0
    for path in _source_rule_files():
        source = yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        groups = rules[f"reflexe-{path.stem}"]
        assert [g["name"] for g in groups] == [g["name"] for g in source]
        for group, source_group in zip(groups, source, strict=True):
            for rule, source_rule in zip(group["rules"], source_group["rules"], strict=True):
                if "alert" in rule:
                    alerts += 1
                    url = rule["annotations"]["runbook_url"]
                    assert url.endswith(f"docs/runbooks/{rule['alert']}.md"), url
                    runbook = RUNBOOKS / f"{rule['alert']}.md"
                    assert runbook.is_file(), f"{rule['alert']} has no runbook {runbook.relative_to(REPO)}"
                    assert f"# {rule['alert']}" in runbook.read_text(encoding="utf-8")
                    rule = {**rule, "annotations": {k: v for k, v in rule["annotations"].items() if k != "runbook_url"}}
                assert rule == {**source_rule, **({"annotations": source_rule.get("annotations", {})} if "alert" in rule else {})}
    assert alerts >= 1


PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


@pytest.mark.skipif(not os.access(PROMTOOL, os.X_OK), reason="promtool is not installed (deploy/local/install-prometheus.sh)")
def test_generated_prometheus_rules_pass_promtool(tmp_path: Path) -> None:
    for rule in of_kind("prod", "PrometheusRule"):
        path = tmp_path / f"{rule['metadata']['name']}.yml"
        path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), encoding="utf-8")
        result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_are_config_maps_for_the_grafana_sidecar() -> None:
    import json

    maps = {m["metadata"]["name"]: m for m in of_kind("prod", "ConfigMap") if m["metadata"]["labels"].get("grafana_dashboard")}
    dashboards = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
    assert len(maps) == len(dashboards) >= 1
    for path in dashboards:
        config_map = maps[f"reflexe-dashboard-{path.stem}"]
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(config_map["data"][path.name]) == json.loads(path.read_text(encoding="utf-8"))
