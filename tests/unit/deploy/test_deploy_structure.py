"""Structural checks of the deployment files: Dockerfiles, docker-compose.yml, Prometheus and
Grafana provisioning, and the Kubernetes manifests.

No Docker engine or cluster is needed: the files are parsed and cross-checked against the
code, chiefly against each service's settings class, so that a renamed environment variable,
a moved port or a dropped hardening flag fails here rather than in a cluster.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices, AliasPath

REPO = Path(__file__).resolve().parents[3]
COMPOSE_FILE = REPO / "docker-compose.yml"
K8S_DIR = REPO / "deploy" / "k8s"
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
GRAFANA_DIR = REPO / "deploy" / "grafana"

SERVICES = sorted(p.parent.name for p in (REPO / "services").glob("*/pyproject.toml"))
# A service is deployed once it has a Dockerfile; until then its deployment checks are skipped
# (visibly), as its settings checks are while its settings module is not written.
DEPLOYED = [s for s in SERVICES if (REPO / "services" / s / "Dockerfile").is_file()]
APP_UID = 10001
# Read from the environment by a library rather than by a settings class: asyncpg takes the
# database password from PGPASSWORD when DATABASE_URL has none (the Kubernetes manifests keep
# the password in a Secret, out of the ConfigMap's URL).
LIBRARY_ENV = {"PGPASSWORD"}
# Dockerfile ENV keys that configure the interpreter or the image, not the service.
IMAGE_ENV = {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|make|clang|cc|libc6-dev|python3-dev)\b")


def test_the_service_list_is_the_expected_one() -> None:
    # Guards the parametrisation below: a service dir without pyproject would be skipped silently.
    assert {"referral", "capacity", "indicators", "notify", "gateway"} <= set(SERVICES)


def _uses_kafka(service: str) -> bool:
    """A service uses Kafka when it has a principal of its own (kafka_acls.SERVICES); the HL7
    gateway has none (it reports over HTTP) and gets no Kafka settings nor credentials."""
    from reflexe_common.kafka_acls import SERVICES as PRINCIPALS

    return service in PRINCIPALS


KAFKA_CREDENTIALS = {"KAFKA_USERNAME", "KAFKA_PASSWORD"}


# --------------------------------------------------------------------------- settings


# Settings fields of the ports a service listens on besides http_port (other `*_port` settings,
# like notify's SMTP port, are ports it connects to).
LISTENING_PORTS = {"gateway": ("mllp_port",)}


@dataclass(frozen=True)
class ServiceConfig:
    env_names: frozenset[str]
    http_port: int
    port_env: str
    # Every port the service listens on, by the variable that sets it: HTTP, plus those of
    # LISTENING_PORTS (the gateway's MLLP).
    port_envs: tuple[tuple[str, int], ...] = ()

    @property
    def ports(self) -> set[int]:
        return {port for _, port in self.port_envs}


def _field_env(settings_cls: type, name: str) -> set[str]:
    """The environment variable(s) one field of a pydantic-settings class is read from."""
    config = getattr(settings_cls, "model_config", {})
    info = settings_cls.model_fields[name]
    alias = info.validation_alias
    if alias is None:
        alias = info.alias or f"{config.get('env_prefix', '') or ''}{name}"
    names: set[str] = set()
    for choice in alias.choices if isinstance(alias, AliasChoices) else [alias]:
        if isinstance(choice, AliasPath):
            choice = choice.path[0]
        names.add(str(choice) if config.get("case_sensitive") else str(choice).upper())
    return names


def _aliases(settings_cls: type) -> set[str]:
    """Every environment variable a pydantic-settings class reads (its fields and its bases')."""
    return {env for name in settings_cls.model_fields for env in _field_env(settings_cls, name)}


@cache
def _settings(service: str) -> ServiceConfig | None:
    """The service's settings, or None when its settings module is not written yet."""
    module_name = f"reflexe_{service}.settings"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name in (module_name, f"reflexe_{service}"):
            return None
        raise
    cls = getattr(module, f"{service.capitalize()}Settings")
    from reflexe_common.settings import ServiceSettings

    assert issubclass(cls, ServiceSettings), f"{cls.__name__} must extend ServiceSettings"
    names = _aliases(cls) | _aliases(ServiceSettings)
    assert "http_port" in cls.model_fields, f"{cls.__name__} has no http_port field"
    port_env = sorted(_field_env(cls, "http_port"))
    port_envs = tuple((env, int(cls.model_fields[name].default)) for name in ("http_port", *LISTENING_PORTS.get(service, ()))
                      for env in sorted(_field_env(cls, name)))
    return ServiceConfig(frozenset(names), int(cls.model_fields["http_port"].default), port_env[0], port_envs)


def _deployed_or_skip(service: str) -> None:
    if service not in DEPLOYED:
        pytest.skip(f"services/{service}/Dockerfile is not written yet: {service} is not deployed")


def _settings_or_skip(service: str) -> ServiceConfig:
    config = _settings(service)
    if config is None:
        pytest.skip(f"reflexe_{service}.settings is not written yet")
    return config


# --------------------------------------------------------------------------- Dockerfiles


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            parts = shlex.split(args)
            if parts and "=" not in parts[0]:  # legacy "ENV KEY value"
                values[parts[0]] = " ".join(parts[1:])
                continue
            for part in parts:
                key, _, value = part.partition("=")
                values[key] = value
        return values


def _parse_dockerfile(path: Path) -> list[Stage]:
    text = path.read_text(encoding="utf-8")
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path}: dangling line continuation"
    args_before_from: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "ARG" and not stages:
            name, _, default = args.partition("=")
            args_before_from[name] = default.strip('"')
        elif keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args_before_from.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        else:
            assert stages, f"{path}: {keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args))
    assert stages, f"{path}: no FROM"
    return stages


def _exec_form(args: str, what: str) -> list[str]:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        pytest.fail(f"{what} must use the exec (JSON array) form, got {args!r}")
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), what
    return value


def _console_script_module(service: str) -> str:
    project = tomllib.loads((REPO / "services" / service / "pyproject.toml").read_text(encoding="utf-8"))
    scripts = project["project"]["scripts"]
    assert f"reflexe-{service}" in scripts, f"services/{service}/pyproject.toml: no reflexe-{service} script"
    return scripts[f"reflexe-{service}"].partition(":")[0].removesuffix(".__main__")


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_is_hardened_and_runs_the_service(service: str) -> None:
    _deployed_or_skip(service)
    path = REPO / "services" / service / "Dockerfile"
    stages = _parse_dockerfile(path)
    final = stages[-1]

    for stage in stages:
        image, _, tag = stage.base.rpartition(":")
        assert image == "python" and tag.startswith("3.11-slim"), f"base image {stage.base!r}: want python:3.11-slim*"
    # No compilers in the runtime stage (the build stage may have them).
    for run in final.all("RUN"):
        assert not ("apt-get" in run and BUILD_TOOLS.search(run)), f"build tools in the final stage: {run}"
    copies_from_build = [c for c in final.all("COPY") if "--from=" in c]
    if len(stages) > 1:
        assert copies_from_build, "multi-stage build whose final stage copies nothing from the build stage"

    users = final.all("USER")
    assert users, "the final stage must set USER"
    assert users[-1].split(":")[0] == str(APP_UID), f"USER {users[-1]}: want the numeric uid {APP_UID}"

    env = final.env()
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("HTTP_HOST") == "0.0.0.0", "inside a container the service must bind 0.0.0.0"

    healthchecks = final.all("HEALTHCHECK")
    assert len(healthchecks) == 1, "exactly one HEALTHCHECK"
    assert "/healthz" in healthchecks[0] and "python" in healthchecks[0], "HEALTHCHECK must GET /healthz with python"
    assert "curl" not in healthchecks[0] and "wget" not in healthchecks[0], "no curl/wget in python:slim"

    entrypoints = final.all("ENTRYPOINT")
    assert len(entrypoints) == 1, "exactly one ENTRYPOINT"
    module = _console_script_module(service)
    assert _exec_form(entrypoints[0], "ENTRYPOINT") == ["python", "-m", module]

    exposed = {int(p.split("/")[0]) for e in final.all("EXPOSE") for p in e.split()}
    config = _settings(service)
    if config is not None:
        assert exposed == config.ports, f"EXPOSE {exposed}: the service listens on {sorted(config.ports)}"
        service_env = set(env) - IMAGE_ENV
        assert service_env <= config.env_names, f"ENV the service does not read: {service_env - config.env_names}"
        port = env.get(config.port_env, str(config.http_port))
        assert f"'{config.port_env}'" in healthchecks[0] or port in healthchecks[0], "HEALTHCHECK on another port"

    # Last: the package the ENTRYPOINT runs must exist (skipped while it is being written).
    package_dirs = [p for p in (REPO / "services").glob(f"*/src/{module}") if (p / "__init__.py").is_file()]
    if not package_dirs:
        pytest.skip(f"package {module} is not written yet (no services/*/src/{module}/)")
    assert any((p / "__main__.py").is_file() for p in package_dirs), f"{module} has no __main__.py for python -m"


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    path = REPO / ".dockerignore"
    assert path.is_file()
    patterns = {line.strip().rstrip("/") for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")}
    for required in (".venv", ".local", ".git", "tests", "test-artifacts"):
        assert required in patterns, f".dockerignore must exclude {required}"
    assert patterns & {"**/__pycache__", "__pycache__"}, ".dockerignore must exclude __pycache__"
    # Allow-list style ("*" then "!path") or deny-list style: either way the images' inputs get in.
    for needed in ("requirements.txt", "constraints.txt", "libs/common", "services"):
        assert needed not in patterns, f".dockerignore excludes {needed}, which the images need"
        if "*" in patterns:
            assert f"!{needed}" in patterns, f".dockerignore excludes everything but does not let {needed} back in"


# --------------------------------------------------------------------------- compose


@cache
def _compose() -> dict[str, Any]:
    assert COMPOSE_FILE.is_file(), "docker-compose.yml is missing"
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def _compose_services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _compose_env(definition: dict[str, Any]) -> dict[str, str]:
    env = definition.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _published_ports(definition: dict[str, Any]) -> list[tuple[int | None, int]]:
    """(host port, container port) pairs; host None when Docker picks one."""
    pairs: list[tuple[int | None, int]] = []
    for entry in definition.get("ports") or []:
        if isinstance(entry, dict):
            published = entry.get("published")
            pairs.append((int(published) if published is not None else None, int(entry["target"])))
            continue
        spec = str(entry).split("/")[0]
        parts = spec.rsplit(":", 2) if spec.count(":") <= 2 else [spec]
        if len(parts) == 1:
            pairs.append((None, int(parts[0])))
        else:
            pairs.append((int(parts[-2]), int(parts[-1])))
    return pairs


def _built_services() -> dict[str, str]:
    """compose service name -> the services/<svc> its Dockerfile builds and runs (a compose service
    that overrides the entrypoint runs a tool from that image instead, e.g. the Kafka ACL job)."""
    built: dict[str, str] = {}
    for name, definition in _compose_services().items():
        if "build" not in definition or "entrypoint" in definition:
            continue
        build = definition["build"]
        context = REPO / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = context / ("Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile"))
        assert dockerfile.is_file(), f"compose service {name}: {dockerfile} does not exist"
        entry = _exec_form(_parse_dockerfile(dockerfile)[-1].all("ENTRYPOINT")[-1], f"{dockerfile} ENTRYPOINT")
        module = entry[-1]
        assert module.startswith("reflexe_"), f"{dockerfile}: ENTRYPOINT runs {module}"
        service = module.removeprefix("reflexe_")
        assert service in SERVICES, f"{dockerfile}: ENTRYPOINT module {module} matches no services/<svc>"
        assert dockerfile.resolve() == (REPO / "services" / service / "Dockerfile").resolve(), (
            f"compose service {name} builds {dockerfile}, not services/{service}/Dockerfile")
        built[name] = service
    return built


def test_compose_builds_every_service_once() -> None:
    built = _built_services()
    assert sorted(built.values()) == DEPLOYED, f"compose builds {sorted(built.values())}, want {DEPLOYED}"
    for name, service in built.items():
        assert name == service, f"compose service {name} runs {service}: Prometheus scrapes by service name"


def test_compose_host_ports_do_not_collide() -> None:
    seen: dict[int, str] = {}
    for name, definition in _compose_services().items():
        for host, _ in _published_ports(definition):
            if host is None:
                continue
            assert host not in seen, f"host port {host} published by both {seen[host]} and {name}"
            seen[host] = name


@pytest.mark.parametrize("service", SERVICES)
def test_compose_service_env_and_ports_match_its_settings(service: str) -> None:
    _deployed_or_skip(service)
    by_service = {svc: name for name, svc in _built_services().items()}
    assert service in by_service, f"docker-compose.yml does not build {service}"
    definition = _compose_services()[by_service[service]]
    env = _compose_env(definition)
    names = _compose_services().keys()

    for key in ("DATABASE_URL", "OIDC_ISSUER"):
        assert key in env, f"{service}: {key} is not set in compose"
    db_host = urlsplit(env["DATABASE_URL"]).hostname
    assert db_host in names, f"{service}: DATABASE_URL host {db_host} is not a compose service"
    depends = definition.get("depends_on") or {}
    dependencies = [db_host]
    if _uses_kafka(service):
        assert "KAFKA_BOOTSTRAP" in env, f"{service}: KAFKA_BOOTSTRAP is not set in compose"
        kafka_host = env["KAFKA_BOOTSTRAP"].split(",")[0].rsplit(":", 1)[0]
        assert kafka_host in names, f"{service}: KAFKA_BOOTSTRAP host {kafka_host} is not a compose service"
        dependencies.append(kafka_host)
    else:
        kafka = sorted(k for k in env if k.startswith("KAFKA_"))
        assert not kafka, f"{service} uses no Kafka, yet compose sets {kafka}"
        assert not {"kafka", "kafka-acls"} & set(depends), f"{service} uses no Kafka: it must not wait for it"
    for dependency in dependencies:
        assert isinstance(depends, dict) and dependency in depends, f"{service} must depend on {dependency}"
        assert depends[dependency].get("condition") == "service_healthy", f"{service}: wait for {dependency} healthy"
        assert "healthcheck" in _compose_services()[dependency], f"{dependency} needs a healthcheck"

    config = _settings_or_skip(service)
    unknown = set(env) - config.env_names
    assert not unknown, f"{service}: compose sets variables its settings do not read: {sorted(unknown)}"
    if config.port_env in env:
        assert int(env[config.port_env]) == config.http_port, f"{service}: compose moves the port"
    for variable, port in config.port_envs:
        if variable in env:
            assert int(env[variable]) == port, f"{service}: compose moves {variable}"
    targets = [target for _, target in _published_ports(definition)]
    assert targets[:1] == [config.http_port], f"{service}: the first published port must be HTTP {config.http_port}"
    assert sorted(targets) == sorted(config.ports), f"{service}: container ports {targets}, it listens on {sorted(config.ports)}"


_COMPOSE_VARIABLE = re.compile(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}")


def _interpolate(value: str, environment: dict[str, str] | None = None) -> str:
    """A compose value as a container sees it, for the given host environment (default: none set,
    so every fallback applies); a required variable that is unset fails the test."""
    environment = environment or {}

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        if environment.get(name):
            return environment[name]
        assert operator != ":?", f"${{{name}}} is required: {argument}"
        return argument if operator == ":-" else ""

    return _COMPOSE_VARIABLE.sub(substitute, value).replace("$$", "$")


def _one_sided(value: str, variable: str) -> bool:
    """Whether the compose value follows the host variable (two different values give two results)."""
    return _interpolate(value, {variable: "first-value"}) != _interpolate(value, {variable: "second-value"})


def test_compose_and_manifests_share_no_signing_secret() -> None:
    for path in [COMPOSE_FILE, *K8S_DIR.rglob("*.yaml")]:
        text = path.read_text(encoding="utf-8")
        assert "JWT_SECRET" not in text, f"{path.relative_to(REPO)}: tokens are verified with the issuer's keys, never a shared secret"


def _keycloak_version() -> str:
    match = re.search(r'KEYCLOAK_VERSION="\$\{REFLEXE_KEYCLOAK_VERSION:-([0-9.]+)\}"',
                      (REPO / "deploy/local/keycloak.sh").read_text(encoding="utf-8"))
    assert match, "deploy/local/keycloak.sh no longer pins its Keycloak version as expected"
    return match.group(1)


def test_compose_services_trust_the_compose_keycloak_realm() -> None:
    realm_file = REPO / "deploy/local/keycloak/reflexe-realm.json"
    realm = json.loads(realm_file.read_text(encoding="utf-8"))["realm"]
    keycloaks = {n: d for n, d in _compose_services().items() if str(d.get("image", "")).startswith("quay.io/keycloak/keycloak:")}
    assert len(keycloaks) == 1, "one quay.io/keycloak/keycloak service in compose"
    (kc_name, keycloak), = keycloaks.items()
    assert keycloak["image"].split(":", 1)[1] == _keycloak_version(), "compose and keycloak.sh run different Keycloak versions"
    command = keycloak.get("command") or []
    command = shlex.split(command) if isinstance(command, str) else command
    assert "start-dev" in command and "--import-realm" in command, f"keycloak command {command}"
    mounts = [str(v) for v in keycloak.get("volumes") or []]
    imported = [v for v in mounts if v.split(":")[0].startswith(".") and (REPO / v.split(":")[0]).resolve() == realm_file.resolve()]
    assert imported, "the demo realm file must be mounted into the Keycloak container"
    target, _, mode = imported[0].split(":", 1)[1].partition(":")
    assert target.startswith("/opt/keycloak/data/import/") and mode == "ro", f"realm mounted at {target} ({mode or 'rw'})"
    kc_env = _compose_env(keycloak)
    public = urlsplit(_interpolate(kc_env["KC_HOSTNAME"]))
    assert public.hostname in ("localhost", "127.0.0.1") and public.scheme == "http", f"KC_HOSTNAME {public.geturl()}"
    assert (public.port, 8080) in _published_ports(keycloak), "KC_HOSTNAME's port must be the published Keycloak port"
    assert "healthcheck" in keycloak, "services wait for a ready Keycloak"

    issuers = {_compose_env(_compose_services()[name]).get("OIDC_ISSUER") for name in _built_services()}
    assert len(issuers) == 1 and None not in issuers, "every service must trust the same identity provider"
    issuer = _interpolate(issuers.pop() or "")
    assert issuer == f"{public.scheme}://{public.netloc}/realms/{realm}", f"issuer {issuer}: not the browser-facing realm URL"
    for name in _built_services():
        definition = _compose_services()[name]
        jwks = urlsplit(_interpolate(_compose_env(definition).get("OIDC_JWKS_URL", "")))
        assert (jwks.hostname, jwks.port) == (kc_name, 8080), f"{name}: OIDC_JWKS_URL must reach {kc_name}:8080 in-network"
        assert jwks.path == f"/realms/{realm}/protocol/openid-connect/certs", f"{name}: OIDC_JWKS_URL path {jwks.path}"
        assert definition["depends_on"].get(kc_name, {}).get("condition") == "service_healthy", f"{name}: wait for {kc_name}"


def _broker() -> dict[str, Any]:
    brokers = [d for d in _compose_services().values() if str(d.get("image", "")).startswith("apache/kafka:")]
    assert len(brokers) == 1, "one apache/kafka broker in compose"
    return brokers[0]


def test_compose_broker_is_kraft_single_node_without_topic_auto_creation() -> None:
    broker = _broker()
    tag = broker["image"].split(":", 1)[1]
    assert re.fullmatch(r"4\.\d+\.\d+", tag), f"apache/kafka tag {tag}: want a pinned 4.x"
    env = _compose_env(broker)
    assert env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "").lower() == "false", "topic auto-creation must be off"
    assert set(env.get("KAFKA_PROCESS_ROLES", "").split(",")) == {"broker", "controller"}
    assert env.get("KAFKA_NODE_ID") and env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "").startswith(env["KAFKA_NODE_ID"] + "@")
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env.get(key) == "1", f"{key} must be 1 on a single node"
    listeners = dict(x.split("://", 1) for x in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(x.split("://", 1) for x in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised.get("EXTERNAL") == "localhost:19092", "host clients reach the broker on localhost:19092"
    assert listeners.get("EXTERNAL", "").endswith(":19092")
    assert (19092, 19092) in _published_ports(broker), "the EXTERNAL listener must be published on host 19092"
    service_hosts = {_compose_env(_compose_services()[name])["KAFKA_BOOTSTRAP"]
                     for name, service in _built_services().items() if _uses_kafka(service)}
    assert service_hosts <= set(advertised.values()), f"services bootstrap from {service_hosts}, not an advertised listener"


def _broker_properties(environment: dict[str, str] | None = None) -> dict[str, str]:
    """The server.properties the apache/kafka image writes from the broker's KAFKA_* variables
    (its KafkaDockerWrapper: prefix dropped, lower case, _ -> ., __ -> _, ___ -> -)."""
    image_settings = {"KAFKA_VERSION", "KAFKA_HEAP_OPTS", "KAFKA_LOG4J_OPTS", "KAFKA_OPTS", "KAFKA_JMX_OPTS",
                      "KAFKA_JVM_PERFORMANCE_OPTS", "KAFKA_GC_LOG_OPTS", "KAFKA_LOG4J_ROOT_LOGLEVEL",
                      "KAFKA_LOG4J_LOGGERS", "KAFKA_TOOLS_LOG4J_LOGLEVEL", "KAFKA_JMX_HOSTNAME"}
    properties = {}
    for key, value in _compose_env(_broker()).items():
        if key.startswith("KAFKA_") and key not in image_settings:
            name = key.removeprefix("KAFKA_").lower().replace("_", ".").replace("...", "-").replace("..", "_")
            properties[name] = _interpolate(value, environment)
    return properties


_JAAS = re.compile(r"(?P<module>[\w.]+) required(?P<options>(?: \w+=\"[^\"]*\")*);")


def _jaas(value: str) -> tuple[str, dict[str, str]]:
    match = _JAAS.fullmatch(" ".join(value.split()))
    assert match, f"not a one-module JAAS configuration: {value!r}"
    return match["module"], dict(re.findall(r'(\w+)="([^"]*)"', match["options"]))


def test_compose_broker_authenticates_every_client_and_denies_without_an_acl() -> None:
    props = _broker_properties()
    protocols = dict(x.split(":") for x in props["listener.security.protocol.map"].split(","))
    listeners = [x.split("://")[0] for x in props["listeners"].split(",")]
    controller = props["controller.listener.names"]
    for listener in listeners:
        assert protocols[listener] in ("SASL_PLAINTEXT", "SASL_SSL"), f"listener {listener} is {protocols[listener]}"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    inter_broker = props["inter.broker.listener.name"]
    for listener in set(listeners) - {controller}:
        module, options = _jaas(props[f"listener.name.{listener.lower()}.scram-sha-512.sasl.jaas.config"])
        assert module == "org.apache.kafka.common.security.scram.ScramLoginModule", listener
        if listener == inter_broker:
            assert options.get("username") == "admin" and options.get("password"), "the broker talks to itself as admin"
    # The controller listener cannot use SCRAM (its credentials live in the metadata it serves).
    assert props["sasl.mechanism.controller.protocol"] == "PLAIN"
    assert props[f"listener.name.{controller.lower()}.sasl.enabled.mechanisms"] == "PLAIN"
    module, options = _jaas(props[f"listener.name.{controller.lower()}.plain.sasl.jaas.config"])
    assert module == "org.apache.kafka.common.security.plain.PlainLoginModule"
    assert options["password"] == options[f"user_{options['username']}"], "the controller's own user must log in"
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert set(props["super.users"].split(";")) == {"User:admin", f"User:{options['username']}"}

    # The super user's SCRAM credential is written at format time, with the password the broker uses.
    broker = _broker()
    command = broker.get("command") or []
    script = command[-1] if isinstance(command, list) else command
    assert "kafka-storage.sh format" in script and "exec /etc/kafka/docker/run" in script, "format, then the image's start"
    assert '--add-scram "SCRAM-SHA-512=[name=admin,password=$$REFLEXE_KAFKA_ADMIN_PASSWORD]"' in script
    env = _compose_env(broker)
    for chosen in ({}, {"REFLEXE_KAFKA_ADMIN_PASSWORD": "chosen-admin-password"}):
        inter = _jaas(_broker_properties(chosen)[f"listener.name.{inter_broker.lower()}.scram-sha-512.sasl.jaas.config"])[1]
        assert _interpolate(env["REFLEXE_KAFKA_ADMIN_PASSWORD"], chosen) == inter["password"], "two admin passwords"
    healthcheck = " ".join(broker["healthcheck"]["test"][1:])
    assert "--command-config" in healthcheck and "$$REFLEXE_KAFKA_ADMIN_PASSWORD" in healthcheck, "healthcheck must authenticate"


def _acl_job() -> tuple[str, dict[str, Any]]:
    jobs = {n: d for n, d in _compose_services().items()
            if d.get("entrypoint") == ["python", "-m", "reflexe_common.kafka_acls", "apply"]}
    assert len(jobs) == 1, "one compose service runs `python -m reflexe_common.kafka_acls apply`"
    return next(iter(jobs.items()))


def test_compose_applies_the_declared_kafka_principals_and_acls_before_the_services_start() -> None:
    from reflexe_common.kafka import password_variable
    from reflexe_common.kafka_acls import ADMIN, SERVICES as PRINCIPALS

    name, job = _acl_job()
    build = job["build"]
    dockerfile = (REPO / build["context"] / build["dockerfile"]).resolve()
    assert dockerfile in {(REPO / "services" / s / "Dockerfile").resolve() for s in SERVICES}, "a service image has reflexe_common"
    assert str(job.get("restart", "no")) == "no", "a one-shot job"
    assert job["depends_on"]["kafka"]["condition"] == "service_healthy"
    env = _compose_env(job)
    advertised = dict(x.split("://", 1) for x in _compose_env(_broker())["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert env["KAFKA_BOOTSTRAP"] in advertised.values()
    assert env["KAFKA_SECURITY_PROTOCOL"].startswith("SASL_") and env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env[password_variable(ADMIN)] == _compose_env(_broker())["REFLEXE_KAFKA_ADMIN_PASSWORD"], "one admin password"
    assert _one_sided(env[password_variable(ADMIN)], password_variable(ADMIN))

    built = {name: service for name, service in _built_services().items() if _uses_kafka(service)}
    assert sorted(built.values()) == sorted(PRINCIPALS), "a principal per service (kafka_acls.SERVICES)"
    passwords = {}
    for compose_name, service in built.items():
        definition = _compose_services()[compose_name]
        service_env = _compose_env(definition)
        assert service_env.get("KAFKA_SECURITY_PROTOCOL", "").startswith("SASL_"), f"{service}: Kafka without SASL"
        assert service_env.get("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512") == "SCRAM-SHA-512"
        assert service_env.get("KAFKA_USERNAME") == service, f"{service} must connect as its own principal"
        variable = password_variable(service)
        assert service_env.get("KAFKA_PASSWORD") == env.get(variable), f"{service}: KAFKA_PASSWORD is not the job's {variable}"
        assert _one_sided(service_env["KAFKA_PASSWORD"], variable), f"{service}: set its password with {variable}"
        passwords[service] = _interpolate(service_env["KAFKA_PASSWORD"])
        assert definition["depends_on"].get(name, {}).get("condition") == "service_completed_successfully", (
            f"{service} must start after {name} created its principal")
    assert len(set(passwords.values())) == len(passwords), "each principal its own password, even in development"


# Logins of the local tools, with the same development defaults as deploy/local/ (README).
LOCAL_TOOL_LOGINS = {"POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "KEYCLOAK_ADMIN_PASSWORD"}


def test_compose_secrets_have_no_default_a_deployment_could_keep_unknowingly() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for name, operator, argument in _COMPOSE_VARIABLE.findall(text):
        if re.search(r"PASSWORD|SECRET|KEY", name) and operator == ":-" and name not in LOCAL_TOOL_LOGINS:
            assert "dev-only" in argument, f"${{{name}}} falls back to {argument!r}: mark it dev-only, or require it"
    notify = _compose_services()["notify"]
    env = _compose_env(notify)
    assert re.fullmatch(r"\$\{NOTIFY_SECRET_KEYS:\?[^}]+\}", env.get("NOTIFY_SECRET_KEYS", "")), (
        "NOTIFY_SECRET_KEYS must be required (${NOTIFY_SECRET_KEYS:?...}): a key in the file seals every copy's secrets")


def test_compose_notify_reaches_the_services_its_desk_page_calls() -> None:
    env = _compose_env(_compose_services()["notify"])
    for variable, service in (("NOTIFY_REFERRAL_URL", "referral"), ("NOTIFY_CAPACITY_URL", "capacity")):
        url = urlsplit(env.get(variable, ""))
        config = _settings_or_skip(service)
        assert (url.hostname, url.port) == (service, config.http_port), f"{variable}={env.get(variable)}"
    public = urlsplit(_interpolate(env.get("NOTIFY_PUBLIC_URL", "")))
    assert (public.port, 8004) in _published_ports(_compose_services()["notify"]), "NOTIFY_PUBLIC_URL: the published port"


def _bind_mounts(definition: dict[str, Any]) -> dict[str, Path]:
    """container path -> host path for the bind mounts of a compose service."""
    mounts: dict[str, Path] = {}
    for volume in definition.get("volumes") or []:
        source, _, rest = str(volume).partition(":")
        if source.startswith((".", "/")):
            mounts[rest.split(":")[0]] = (REPO / source).resolve()
    return mounts


def test_prometheus_scrapes_every_service_and_loads_the_rules_dir() -> None:
    prometheus = [d for d in _compose_services().values() if str(d.get("image", "")).startswith("prom/prometheus")]
    assert len(prometheus) == 1
    mounts = _bind_mounts(prometheus[0])
    config_path = PROMETHEUS_DIR / "prometheus.yml"
    assert mounts.get("/etc/prometheus/prometheus.yml") == config_path.resolve()
    rules_mount = [c for c, h in mounts.items() if h == (PROMETHEUS_DIR / "rules").resolve()]
    assert rules_mount and (PROMETHEUS_DIR / "rules").is_dir(), "deploy/prometheus/rules must be mounted"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    assert any(f.startswith(rules_mount[0] + "/") for f in config.get("rule_files", [])), "rule_files must read the rules dir"
    targets = {t for job in config["scrape_configs"] if job.get("metrics_path", "/metrics") == "/metrics"
               for sc in job.get("static_configs", []) for t in sc["targets"]}
    for name in _built_services():
        definition = _compose_services()[name]
        port = _published_ports(definition)[0][1]
        assert f"{name}:{port}" in targets, f"Prometheus does not scrape {name}:{port}"


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboards_dir() -> None:
    grafana = [d for d in _compose_services().values() if str(d.get("image", "")).startswith("grafana/grafana")]
    assert len(grafana) == 1
    mounts = _bind_mounts(grafana[0])
    assert mounts.get("/etc/grafana/provisioning") == (GRAFANA_DIR / "provisioning").resolve()
    datasources = yaml.safe_load((GRAFANA_DIR / "provisioning/datasources/prometheus.yml").read_text(encoding="utf-8"))
    prom = [d for d in datasources["datasources"] if d["type"] == "prometheus"]
    assert len(prom) == 1 and prom[0]["uid"] == "prometheus", "dashboards refer to the datasource uid 'prometheus'"
    assert urlsplit(prom[0]["url"]).hostname in _compose_services(), "datasource URL must name the compose service"
    providers = yaml.safe_load((GRAFANA_DIR / "provisioning/dashboards/dashboards.yml").read_text(encoding="utf-8"))
    paths = {p["options"]["path"] for p in providers["providers"]}
    for path in paths:
        assert mounts.get(path) == (GRAFANA_DIR / "dashboards").resolve(), f"{path} is not deploy/grafana/dashboards"


# --------------------------------------------------------------------------- Kubernetes


# The Kubernetes checks read the production overlay as kustomize builds it (the same build that
# test_k8s_manifests.py validates with kubeconform): what a cluster would receive.
K8S_OVERLAY = K8S_DIR / "overlays" / "prod"
K8S_BASE = K8S_DIR / "base"
# Secrets made by the operators (docs/deploy-kubernetes.md): the KafkaUsers' passwords (a Secret
# named like the user, key password), the Kafka cluster's CA, the database cluster's CA.
OPERATOR_SECRET_KEYS = {
    **{principal: {"password"} for principal in ("referral", "capacity", "indicators", "notify")},
    "reflexe-cluster-ca-cert": {"ca.crt"},
    "reflexe-db-ca": {"ca.crt"},
}


@cache
def _k8s_documents() -> list[dict[str, Any]]:
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("reflexe_script_validate_k8s", REPO / "scripts" / "validate_k8s.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return [d for d in yaml.safe_load_all(module.build(K8S_OVERLAY)) if d]


def _k8s(kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in _k8s_documents() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


K8S_EXAMPLES = K8S_DIR / "examples"


@cache
def _k8s_examples() -> list[dict[str, Any]]:
    """The documented example Secrets: never applied by a kustomization."""
    return [d for path in sorted(K8S_EXAMPLES.glob("*.yaml"))
            for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _example_secret_keys(name: str) -> dict[str, str]:
    secrets = [d for d in _k8s_examples() if d["kind"] == "Secret" and d["metadata"]["name"] == name]
    assert len(secrets) == 1, f"Secret {name} is not documented in deploy/k8s/examples/"
    return {**secrets[0].get("data", {}), **secrets[0].get("stringData", {})}


def _secret_keys(name: str) -> set[str]:
    """The keys of a Secret the pods read: made by an operator, or documented by an example."""
    if name in OPERATOR_SECRET_KEYS:
        return OPERATOR_SECRET_KEYS[name]
    return set(_example_secret_keys(name))


def _secret_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """env name -> (Secret, key) for the container's secretKeyRef variables."""
    refs = {}
    for ref in container.get("env", []):
        secret_ref = ref.get("valueFrom", {}).get("secretKeyRef")
        if secret_ref:
            refs[ref["name"]] = (secret_ref["name"], secret_ref["key"])
    return refs


def test_base_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text(encoding="utf-8"))
    on_disk = {str(p.relative_to(K8S_BASE)) for p in [*K8S_BASE.glob("*.yaml"), *K8S_BASE.glob("generated/*.yaml")]}
    assert on_disk - {"kustomization.yaml"} == set(kustomization["resources"]), "kustomization.yaml and base/ disagree"
    for required in ("namespace.yaml", "config.yaml", *(f"{s}.yaml" for s in DEPLOYED)):
        assert required in on_disk, f"deploy/k8s/base/{required} is missing"
    namespaces = {d["metadata"]["name"] for d in _k8s("Namespace")}
    assert namespaces == {kustomization["namespace"]}
    for document in _k8s_documents():
        if document["kind"] != "Namespace":
            assert document["metadata"].get("namespace") == kustomization["namespace"]


def test_no_example_secret_is_applied_by_a_kustomization() -> None:
    for path in K8S_DIR.rglob("kustomization.yaml"):
        kustomization = yaml.safe_load(path.read_text(encoding="utf-8"))
        for resource in kustomization.get("resources", []):
            assert "example" not in resource, f"{path.relative_to(REPO)} applies {resource}"
    assert not _k8s("Secret"), "Secrets are created out of band"
    # Every Secret a pod reads is made by an operator or documented by an example, and every
    # example is read (by a pod or by the database cluster).
    referenced = set()
    for document in _k8s_documents():
        if document.get("kind") in ("Deployment", "Job"):
            for container in document["spec"]["template"]["spec"]["containers"]:
                for secret, key in _secret_refs(container).values():
                    assert key in _secret_keys(secret), f"{document['metadata']['name']}: Secret {secret} has no key {key}"
                    referenced.add(secret)
    cluster = _k8s("Cluster", "reflexe-db")[0]["spec"]
    referenced |= {r["passwordSecret"]["name"] for r in cluster["managed"]["roles"]}
    referenced |= {ref["name"] for ref in cluster["backup"]["barmanObjectStore"]["s3Credentials"].values()}
    examples = {d["metadata"]["name"] for d in _k8s_examples() if d["kind"] == "Secret"}
    assert examples == referenced - set(OPERATOR_SECRET_KEYS), f"example Secrets nobody reads: {sorted(examples - referenced)}"
    for document in _k8s_examples():
        if document["kind"] == "Secret":
            for value in document.get("stringData", {}).values():
                if document["metadata"]["name"] != "reflexe-notify-secret-keys" and "password" in str(value).lower():
                    assert "EXAMPLE" in value, f"{document['metadata']['name']}: example values say so"
    guide = (REPO / "docs" / "deploy-kubernetes.md").read_text(encoding="utf-8")
    for secret in examples:
        assert secret in guide or secret.startswith("reflexe-db-") and "reflexe-db-$s" in guide, (
            f"docs/deploy-kubernetes.md does not say how to create the Secret {secret}")


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']}: one container per pod"
    return containers[0]


def _k8s_env_names(container: dict[str, Any]) -> set[str]:
    names = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            maps = _k8s("ConfigMap", source["configMapRef"]["name"])
            assert maps, f"envFrom references a ConfigMap {source['configMapRef']['name']} that is not defined"
            names |= {source.get("prefix", "") + key for key in maps[0].get("data", {})}
        if "secretRef" in source:
            secrets = _k8s("Secret", source["secretRef"]["name"])
            assert secrets, f"envFrom references a Secret {source['secretRef']['name']} that is not defined"
            secret = secrets[0]
            names |= {source.get("prefix", "") + key for key in {**secret.get("data", {}), **secret.get("stringData", {})}}
    return names


def _container_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    named = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert named, f"no container port named {port}"
    return named[0]


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_deployment_is_hardened_and_probed(service: str) -> None:
    _deployed_or_skip(service)
    deployments = _k8s("Deployment", service)
    assert len(deployments) == 1, f"one Deployment named {service}"
    deployment = deployments[0]
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    pod_sc = pod.get("securityContext", {})
    sc = container.get("securityContext", {})

    def effective(key: str) -> Any:
        return sc.get(key, pod_sc.get(key))

    assert effective("runAsNonRoot") is True
    assert effective("runAsUser") == APP_UID
    assert (effective("seccompProfile") or {}).get("type") == "RuntimeDefault"
    assert sc.get("readOnlyRootFilesystem") is True
    assert sc.get("allowPrivilegeEscalation") is False
    assert "ALL" in sc.get("capabilities", {}).get("drop", []), "capabilities must drop ALL"
    assert not sc.get("privileged", False)
    assert pod.get("terminationGracePeriodSeconds") == 30

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
    assert tmp and "emptyDir" in volumes.get(tmp[0]["name"], {}), "a read-only root needs an emptyDir at /tmp"

    resources = container.get("resources", {})
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"resources.{bound} needs cpu and memory"

    ports = [p["containerPort"] for p in container.get("ports", [])]
    assert len(ports) == len(set(ports)) >= 1, "container ports, each once"
    http_port = _container_port(container, "http")  # the one probed and scraped, named http
    config = _settings(service)
    if config is not None:
        assert set(ports) == config.ports, f"container ports {ports}: the service listens on {sorted(config.ports)}"
        assert http_port == config.http_port, f"the port named http is {http_port}, not HTTP {config.http_port}"
    else:
        assert len(ports) == 1, "one container port"
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet")
        assert get and get["path"] == path, f"{probe} must GET {path}"
        assert _container_port(container, get["port"]) == http_port, f"{probe} probes another port than http"

    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    assert annotations.get("prometheus.io/scrape") == "true"
    assert int(annotations.get("prometheus.io/port", -1)) == http_port
    assert annotations.get("prometheus.io/path", "/metrics") == "/metrics"

    if service == "capacity":
        assert deployment["spec"].get("replicas", 1) >= 2, "the matcher scales within a consumer group"


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_service_and_env_match_the_settings(service: str) -> None:
    _deployed_or_skip(service)
    deployment = _k8s("Deployment", service)[0]
    container = _container(deployment)
    port = _container_port(container, "http")
    container_ports = {p["containerPort"] for p in container["ports"]}

    services = _k8s("Service", service)
    assert len(services) == 1, f"one Service named {service}"
    spec = services[0]["spec"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"].items() <= pod_labels.items(), "the Service selects no pod of the Deployment"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    targets = {_container_port(container, p.get("targetPort", p["port"])) for p in spec["ports"]}
    assert targets == container_ports, f"Service targets {sorted(targets)}, the container listens on {sorted(container_ports)}"

    secret_refs = _secret_refs(container)
    for secret, key in secret_refs.values():
        assert key in _secret_keys(secret), f"Secret {secret} has no key {key}"

    names = _k8s_env_names(container)
    for key in ("DATABASE_URL", "OIDC_ISSUER", *(["KAFKA_BOOTSTRAP"] if _uses_kafka(service) else [])):
        assert key in names, f"{service}: {key} is not set in the manifests"

    config = _settings_or_skip(service)
    unknown = names - config.env_names - LIBRARY_ENV
    assert not unknown, f"{service}: the manifests set variables its settings do not read: {sorted(unknown)}"
    assert port == config.http_port, f"containerPort {port}, the service listens on {config.http_port}"
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    if env.get(config.port_env) is not None:
        assert int(env[config.port_env]) == config.http_port


def test_k8s_services_are_their_own_kafka_principals_and_notify_has_its_keys() -> None:
    from reflexe_common.kafka_acls import SERVICES as PRINCIPALS

    secrets = {}
    users = {u["metadata"]["name"] for u in _k8s("KafkaUser")}
    for service in DEPLOYED:
        container = _container(_k8s("Deployment", service)[0])
        refs = _secret_refs(container)
        env = {e["name"]: e for e in container.get("env", [])}
        if not _uses_kafka(service):
            names = _k8s_env_names(container)
            assert not KAFKA_CREDENTIALS & (set(refs) | names), f"{service} uses no Kafka: no Kafka credentials"
            continue
        # Its principal is the KafkaUser named like it (the ACLs of kafka_acls.py); the operator
        # keeps that user's password in the Secret of the same name.
        assert env["KAFKA_USERNAME"].get("value") == service, f"{service}: its principal is named {service}"
        assert service in PRINCIPALS and service in users, f"{service}: no KafkaUser {service}"
        assert refs["KAFKA_PASSWORD"] == (service, "password"), f"{service}: the password of its own KafkaUser"
        secrets[service] = refs["KAFKA_PASSWORD"][0]
    assert len(set(secrets.values())) == len(secrets), f"one Kafka Secret per service: {secrets}"

    refs = _secret_refs(_container(_k8s("Deployment", "notify")[0]))
    assert "NOTIFY_SECRET_KEYS" in refs, "notify's Fernet keys come from a Secret"
    from reflexe_notify.adapters.secret_box import parse_keys

    assert parse_keys(_example_secret_keys(refs["NOTIFY_SECRET_KEYS"][0])[refs["NOTIFY_SECRET_KEYS"][1]])


def test_k8s_config_points_at_the_operators_kafka_and_postgres() -> None:
    data = _k8s("ConfigMap", "reflexe-config")[0]["data"]
    kafka = _k8s("Kafka", "reflexe")[0]
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    # Strimzi's bootstrap Service of that cluster, on its TLS listener; SCRAM over TLS.
    assert data["KAFKA_BOOTSTRAP"] == f"{kafka['metadata']['name']}-kafka-bootstrap:{listener['port']}"
    assert data.get("KAFKA_SECURITY_PROTOCOL") == "SASL_SSL" and listener["tls"] is True
    assert data.get("KAFKA_SASL_MECHANISM") == "SCRAM-SHA-512" == listener["authentication"]["type"].upper()
    for secret in ("KAFKA_USERNAME", "KAFKA_PASSWORD", "NOTIFY_SECRET_KEYS", "PGPASSWORD", "DATABASE_URL"):
        assert secret not in data, f"{secret} is per service (its Deployment), never shared here"
    assert urlsplit(data.get("OIDC_ISSUER", "")).scheme == "https", "the issuer is reached over https"
    assert data.get("HTTP_HOST", "0.0.0.0") == "0.0.0.0"
    cluster = _k8s("Cluster")[0]["metadata"]["name"]
    for service in DEPLOYED:
        env = {e["name"]: e.get("value") for e in _container(_k8s("Deployment", service)[0]).get("env", [])}
        url = urlsplit(env["DATABASE_URL"])
        assert (url.hostname, url.port) == (f"{cluster}-rw", 5432), "CloudNativePG's read-write Service"
        assert url.username == service and url.password is None, "its own role; the password in a Secret"


def test_the_gateways_pseudonym_key_and_client_secret_are_secrets_everywhere() -> None:
    _deployed_or_skip("gateway")
    secret_settings = ("GATEWAY_PSEUDONYM_KEY", "GATEWAY_CLIENT_SECRET")
    env = _compose_env(_compose_services()["gateway"])
    for variable in secret_settings:
        assert re.fullmatch(rf"\$\{{{variable}:\?[^}}]+\}}", env.get(variable, "")), (
            f"compose must require {variable} (${{{variable}:?...}}): no fallback for a secret")
    assert urlsplit(env["GATEWAY_REFERRAL_URL"]).hostname == "referral", "the gateway reports to the referral service"
    discovery = urlsplit(env.get("GATEWAY_OIDC_DISCOVERY_URL", ""))
    assert discovery.hostname == "keycloak", "its token comes from Keycloak in-network, not the issuer's host address"

    container = _container(_k8s("Deployment", "gateway")[0])
    refs = _secret_refs(container)
    for variable in secret_settings:
        assert variable in refs, f"the gateway reads {variable} from a Secret"
    assert refs["GATEWAY_PSEUDONYM_KEY"][0] == refs["GATEWAY_CLIENT_SECRET"][0] == "reflexe-gateway"
    plain = {e["name"] for e in container.get("env", []) if "value" in e}
    from_maps = {key for source in container.get("envFrom", []) if "configMapRef" in source
                 for key in _k8s("ConfigMap", source["configMapRef"]["name"])[0].get("data", {})}
    assert not set(secret_settings) & (plain | from_maps), "a gateway secret in plain env or a ConfigMap"
    env_values = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env_values.get("GATEWAY_MLLP_HOST") == "0.0.0.0", "in a pod MLLP must listen beyond loopback"
