"""The production stack (docker-compose.yml, Dockerfile, deploy/) checked without Docker.

No Docker engine runs here, so these tests read the files the way Compose, the ievents processes,
Prometheus, Alertmanager, Grafana and ClickHouse would, and check that they agree with each other and
with the code: every service README.md mentions exists; every IEVENTS_* variable is a Settings field and
each process gets the ones it needs; every host:port one service uses to reach another names a service
and a port that service listens on; start order, health checks, volumes; the image installs the pinned
dependencies of pyproject.toml and runs commands the CLI has; the dashboard only asks for metrics that
exist; the analyst ClickHouse user is read-only.

Compose's ${VAR:-default} interpolation is applied with every variable unset, so the defaults are what
is checked (the values a plain `docker compose up` uses).
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import pytest

try:
    import yaml
except ImportError as exc:  # pragma: no cover - a missing test dependency, said plainly
    raise ImportError("tests/deploy needs PyYAML: add PyYAML to the test extras of pyproject.toml") from exc

from ievents.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy"
PROMETHEUS_FILE = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS_FILE = DEPLOY / "prometheus" / "alerts.yml"
ALERTMANAGER_FILE = DEPLOY / "alertmanager" / "alertmanager.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARD_FILE = GRAFANA / "dashboards" / "ievents.json"
CLICKHOUSE_DIR = DEPLOY / "clickhouse"
USERS_FILE = CLICKHOUSE_DIR / "users.d" / "ievents.xml"
README_FILE = ROOT / "README.md"
README_SECTION = "Production stack"
ENV_PREFIX = "IEVENTS_"


# --- reading the files --------------------------------------------------------------------------------

_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def interpolate(value: Any) -> Any:
    """Compose's variable interpolation with every variable unset: ``${X:-d}`` -> d, ``${X}`` -> '', ``$$`` -> $."""
    if isinstance(value, str):
        def substitute(match: re.Match) -> str:
            if match.group(0) == "$$":
                return "$"
            op = match["op"]
            if op in (":-", "-"):
                return match["arg"]
            if op in (":?", "?"):
                raise AssertionError(f"{match.group(0)} requires a variable the defaults do not provide")
            return ""

        return _VARIABLE.sub(substitute, value)
    if isinstance(value, dict):
        return {key: interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item) for item in value]
    return value


def load_yaml(path: Path) -> Any:
    with path.open() as handle:
        return yaml.safe_load(handle)


COMPOSE: dict[str, Any] = interpolate(load_yaml(COMPOSE_FILE))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
OWN_SERVICES = sorted(name for name, service in SERVICES.items() if "build" in service)
PROMETHEUS: dict[str, Any] = load_yaml(PROMETHEUS_FILE)


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as strings; None = passed through from the host (unset by default)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {key: None if value is None else str(value).lower() if isinstance(value, bool) else str(value)
            for key, value in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    args = service.get("command") or []
    return shlex.split(args) if isinstance(args, str) else [str(arg) for arg in args]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, rest = text.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in dockerfile_instructions():
        if keyword != "ENV":
            continue
        tokens = shlex.split(args)
        if tokens and "=" in tokens[0]:
            env.update(token.split("=", 1) for token in tokens)
        else:
            key, _, value = args.partition(" ")
            env[key] = value.strip()
    return env


@contextmanager
def only_these_variables(env: dict[str, str]) -> Iterator[None]:
    """os.environ holding exactly ``env``'s IEVENTS_* variables (the test runner's own are set aside)."""
    saved = {key: value for key, value in os.environ.items() if key.startswith(ENV_PREFIX)}
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    try:
        yield
    finally:
        for key in env:
            os.environ.pop(key, None)
        os.environ.update(saved)


def container_env(name: str) -> dict[str, str]:
    """The IEVENTS_* variables the process of service ``name`` sees: the image's ENV, then compose's."""
    env = {**dockerfile_env(), **environment(SERVICES[name])}
    return {key: value for key, value in env.items() if key.startswith(ENV_PREFIX) and value is not None}


def container_settings(name: str) -> Settings:
    with only_these_variables(container_env(name)):
        return Settings()


def field_of(variable: str) -> str:
    return variable.removeprefix(ENV_PREFIX).lower()


def volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume of a service (short or long syntax)."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mounts.append((str(volume.get("source", "")), str(volume["target"])))
        else:
            source, target = volume.split(":")[:2]
            mounts.append((source, target))
    return mounts


def published(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host part, container port) of each published port."""
    ports = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            ports.append((str(port.get("published", "")), int(port["target"])))
        else:
            *host, container = str(port).rsplit(":", 1) if ":" in str(port) else ("", str(port))
            ports.append((":".join(host), int(container.split("/")[0])))
    return ports


def option(args: list[str], name: str) -> str | None:
    """The value of ``--name=value`` / ``--name value`` in a command line."""
    for index, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and index + 1 < len(args):
            return args[index + 1]
    return None


def host_port(address: str, default_port: int | None = None) -> tuple[str, int]:
    """Host and port of ``host:port``, ``scheme://user:pw@host:port/path`` or ``1@host:port``."""
    if "://" in address:
        parsed = urlparse(address)
        assert parsed.hostname, f"no host in {address!r}"
        port = parsed.port or default_port or {"http": 80, "https": 443}.get(parsed.scheme)
        return parsed.hostname, int(port)
    address = address.split("@", 1)[-1]
    host, _, port = address.rpartition(":")
    return host, int(port)


def clickhouse_config() -> ET.Element:
    """The config.d files of deploy/clickhouse merged (later elements win, as ClickHouse merges them)."""
    merged = ET.Element("clickhouse")
    for path in sorted((CLICKHOUSE_DIR / "config.d").glob("*.xml")):
        for element in ET.parse(path).getroot():
            merged.append(element)
    return merged


def users() -> ET.Element:
    return ET.parse(USERS_FILE).getroot()


# --- which ports each service listens on --------------------------------------------------------------

# `ievents <command>` -> the Settings field holding the port its process serves (0 = nothing served).
COMMAND_PORTS = {
    "stream": "stream_metrics_port",
    "sink": "sink_metrics_port",
    "serve": "api_port",
    "simulate": "producer_metrics_port",
    "migrate": None,
}


def listening_ports(name: str) -> set[int]:
    """The container ports a service's process listens on, read from that service's own configuration."""
    service = SERVICES[name]
    env = environment(service)
    args = command(service)
    if name in OWN_SERVICES:
        field = COMMAND_PORTS[args[0]]
        port = getattr(container_settings(name), field) if field else 0
        return {port} if port else set()
    if name == "kafka":  # NAME://host:port, host empty = every interface
        return {int(listener.rsplit(":", 1)[1]) for listener in env["KAFKA_LISTENERS"].split(",")}
    if name == "schema-registry":
        return {int(listener.rsplit(":", 1)[1]) for listener in env["SCHEMA_REGISTRY_LISTENERS"].split(",")}
    if name == "clickhouse":
        config = clickhouse_config()
        return {int(config.findtext(key)) for key in ("http_port", "tcp_port", "prometheus/port")}
    if name in ("prometheus", "alertmanager"):
        return {host_port(option(args, "--web.listen-address"))[1]}
    if name == "grafana":
        return {int(env.get("GF_SERVER_HTTP_PORT") or 3000)}
    if name == "kafka-init":
        return set()
    raise AssertionError(f"listening_ports() has no rule for service {name!r}; add one")


# --- the files parse ----------------------------------------------------------------------------------

DEPLOY_FILES = sorted(
    path for path in DEPLOY.rglob("*") if path.is_file() and path.suffix in {".yml", ".yaml", ".json", ".xml"}
)


@pytest.mark.parametrize("path", DEPLOY_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_deploy_file_parses(path: Path) -> None:
    if path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".xml":
        ET.parse(path)
    else:
        assert load_yaml(path) is not None, f"{path} is empty"


def test_compose_file_has_the_stack() -> None:
    expected = {
        "kafka", "kafka-init", "schema-registry", "clickhouse", "migrate", "stream", "sink", "api", "simulator",
        "prometheus", "alertmanager", "grafana",
    }
    assert expected <= set(SERVICES), f"services missing from docker-compose.yml: {sorted(expected - set(SERVICES))}"
    assert OWN_SERVICES == sorted(["api", "migrate", "simulator", "sink", "stream"]), OWN_SERVICES


@pytest.mark.parametrize(("service", "image"), [
    ("kafka", "apache/kafka:3.8.0"),
    ("kafka-init", "apache/kafka:3.8.0"),
    ("schema-registry", "confluentinc/cp-schema-registry:7.7.1"),
    ("clickhouse", "clickhouse/clickhouse-server:24.8"),
    ("prometheus", "prom/prometheus:v2.54.1"),
    ("alertmanager", "prom/alertmanager:v0.27.0"),
    ("grafana", "grafana/grafana:11.2.0"),
])
def test_third_party_images_are_pinned(service: str, image: str) -> None:
    assert SERVICES[service].get("image") == image


@pytest.mark.parametrize("name", OWN_SERVICES)
def test_own_services_use_the_one_image(name: str) -> None:
    service = SERVICES[name]
    build = service["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (context, dockerfile) == (".", "Dockerfile"), f"{name} builds {context}/{dockerfile}, not ./Dockerfile"
    images = {SERVICES[other].get("image") for other in OWN_SERVICES}
    assert len(images) == 1, f"the ievents services should share one image tag, found {images}"


# --- README -------------------------------------------------------------------------------------------

_COMPOSE_SUBCOMMANDS = {"up", "logs", "restart", "stop", "start", "exec", "run", "ps", "pull", "build", "rm", "kill",
                        "top", "create", "pause", "unpause"}
_OPTIONS_WITH_VALUES = {"--profile", "-f", "--file", "--env-file", "-p", "--project-name", "--scale", "-e", "--env",
                        "-u", "--user", "-w", "--workdir", "--tail", "--since", "--until", "-t", "--timeout"}


def readme_section() -> str:
    text = README_FILE.read_text()
    match = re.search(rf"^## {re.escape(README_SECTION)}.*?(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, (
        f"README.md has no '## {README_SECTION} ...' section (how to start docker-compose.yml, a table of its "
        "services, what to open)"
    )
    return match.group(0)


def services_named_in(section: str) -> set[str]:
    """Services in the section's table (first cell `name`) and in its `docker compose ...` command lines."""
    named = set(re.findall(r"^\|\s*`([a-z][a-z0-9-]*)`\s*\|", section, flags=re.M))
    code = "\n".join(re.findall(r"^```[a-z]*\n(.*?)^```", section, flags=re.M | re.S)).replace("\\\n", " ")
    for line in code.splitlines():
        if not line.strip().startswith("docker compose"):
            continue
        tokens = shlex.split(line.strip().removeprefix("docker compose"), comments=True)
        subcommand = next((token for token in tokens if token in _COMPOSE_SUBCOMMANDS), None)
        if subcommand is None:
            continue
        rest = tokens[tokens.index(subcommand) + 1:]
        index = 0
        while index < len(rest):
            token = rest[index]
            if token == "--scale" and index + 1 < len(rest):
                named.add(rest[index + 1].split("=")[0])
                index += 2
            elif token in _OPTIONS_WITH_VALUES:
                index += 2
            elif token.startswith("-"):
                index += 1
            else:
                named.add(token)
                if subcommand in ("exec", "run"):
                    break  # the rest is the command run in the container
                index += 1
    return named


def test_readme_names_only_services_that_exist() -> None:
    missing = services_named_in(readme_section()) - set(SERVICES)
    assert not missing, f"README.md's {README_SECTION} section names services docker-compose.yml lacks: {missing}"


def test_readme_lists_every_service() -> None:
    section = readme_section()
    listed = set(re.findall(r"^\|\s*`([a-z][a-z0-9-]*)`\s*\|", section, flags=re.M))
    unlisted = set(SERVICES) - listed
    assert not unlisted, f"README.md's {README_SECTION} table does not list these services: {sorted(unlisted)}"


# --- settings -----------------------------------------------------------------------------------------

def _ievents_variables() -> list[tuple[str, str]]:
    found = [("Dockerfile", key) for key in dockerfile_env() if key.startswith(ENV_PREFIX)]
    for name, service in SERVICES.items():
        found += [(name, key) for key in environment(service) if key.startswith(ENV_PREFIX)]
    return found


@pytest.mark.parametrize(("where", "variable"), _ievents_variables(), ids=lambda value: value)
def test_ievents_variable_is_a_settings_field(where: str, variable: str) -> None:
    assert field_of(variable) in Settings.model_fields, (
        f"{where} sets {variable}, which no process reads: ievents/settings.py has no field {field_of(variable)!r}"
    )


@pytest.mark.parametrize("name", OWN_SERVICES)
def test_settings_load_in_each_container(name: str) -> None:
    try:
        container_settings(name)
    except Exception as exc:  # a value pydantic cannot parse
        pytest.fail(f"Settings() fails with the environment of service {name}: {exc}")


_NEEDS_KAFKA = {
    "kafka_bootstrap": lambda value: bool(value),
    "schema_registry_url": lambda value: value.startswith("http"),
}
_SERVES_METRICS = {"metrics_host": lambda value: value == "0.0.0.0"}
_NEEDS_CLICKHOUSE = {"clickhouse_url": lambda value: value.startswith(("http://", "https://"))}
# What each process of the stack cannot run without (the embedded defaults do not work in a container).
REQUIRED_SETTINGS = {
    "stream": {**_NEEDS_KAFKA, **_SERVES_METRICS, "stream_metrics_port": lambda port: port > 0},
    "sink": {**_NEEDS_KAFKA, **_NEEDS_CLICKHOUSE, **_SERVES_METRICS, "sink_metrics_port": lambda port: port > 0},
    "api": {**_NEEDS_CLICKHOUSE, "api_host": lambda value: value == "0.0.0.0",
            "operator_key": lambda value: bool(value)},
    "migrate": {**_NEEDS_CLICKHOUSE},
    "simulator": {**_NEEDS_KAFKA, **_SERVES_METRICS, "producer_metrics_port": lambda port: port > 0},
}


@pytest.mark.parametrize(
    ("name", "field"), [(name, field) for name, fields in REQUIRED_SETTINGS.items() for field in fields],
    ids=lambda value: value,
)
def test_each_process_gets_the_settings_it_needs(name: str, field: str) -> None:
    value = getattr(container_settings(name), field)
    assert REQUIRED_SETTINGS[name][field](value), (
        f"service {name}: {ENV_PREFIX}{field.upper()} = {value!r} will not work in a container; set it in "
        "docker-compose.yml"
    )


def test_every_own_service_has_required_settings() -> None:
    assert set(REQUIRED_SETTINGS) == set(OWN_SERVICES), "REQUIRED_SETTINGS should cover every ievents service"


# Settings every process must agree on, or they do not meet: same topics, same partitions, same database ...
SHARED_FIELDS = [
    "kafka_bootstrap", "schema_registry_url", "topic_raw", "topic_enriched", "topic_dlq", "topic_partitions",
    "stream_app_id", "clickhouse_url", "clickhouse_database",
]


@pytest.mark.parametrize("field", SHARED_FIELDS)
def test_processes_agree(field: str) -> None:
    values = {name: getattr(container_settings(name), field) for name in OWN_SERVICES}
    set_values = {value for value in values.values() if value not in ("", None)}
    assert len(set_values) == 1, f"the ievents services disagree on {ENV_PREFIX}{field.upper()}: {values}"


def test_data_dir_is_the_one_the_image_makes_writable() -> None:
    image_dir = dockerfile_env().get(f"{ENV_PREFIX}DATA_DIR")
    assert image_dir, "the Dockerfile should set IEVENTS_DATA_DIR to a folder its user owns"
    assert f"--home-dir {image_dir}" in DOCKERFILE.read_text() or f"mkdir -p {image_dir}" in DOCKERFILE.read_text()
    for name in OWN_SERVICES:
        assert str(container_settings(name).data_dir) == image_dir, f"{name} writes outside {image_dir}"


def test_code_names_only_real_variables() -> None:
    """Every IEVENTS_* name written in the code (help, error messages) is a Settings field."""
    unknown = {}
    for path in (ROOT / "ievents").rglob("*.py"):
        for variable in re.findall(r"\bIEVENTS_[A-Z][A-Z0-9_]*[A-Z0-9]", path.read_text()):
            if field_of(variable) not in Settings.model_fields:
                unknown[variable] = path.relative_to(ROOT)
    assert not unknown, f"the code names variables no setting reads: {unknown}"


def test_topics_created_up_front_are_the_pipelines() -> None:
    env = environment(SERVICES["kafka-init"])
    settings = container_settings("stream")
    created = env["TOPICS"].split() + env["COMPACTED_TOPICS"].split()
    assert sorted(created) == sorted(settings.topics), (
        f"kafka-init creates {sorted(created)} but the pipeline uses Settings.topics = {sorted(settings.topics)}"
    )
    assert settings.stream_table_changelog in env["COMPACTED_TOPICS"].split()
    assert int(env["PARTITIONS"]) == settings.topic_partitions, (
        "kafka-init's partition count differs from IEVENTS_TOPIC_PARTITIONS (the Faust table needs them equal)"
    )
    for name in ("stream", "sink", "simulator"):
        depends = SERVICES[name].get("depends_on") or {}
        assert depends.get("kafka-init", {}).get("condition") == "service_completed_successfully", (
            f"{name} must wait for kafka-init: the stream worker declares no topics itself"
        )


# --- service-to-service addresses ---------------------------------------------------------------------

LINK_VARIABLES = {
    "IEVENTS_KAFKA_BOOTSTRAP", "IEVENTS_SCHEMA_REGISTRY_URL", "IEVENTS_CLICKHOUSE_URL", "IEVENTS_API_URL",
    "SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS", "KAFKA_CONTROLLER_QUORUM_VOTERS", "BOOTSTRAP",
}


def _links() -> list[tuple[str, str, str, int]]:
    """(where, from service, host, port) for every address a service uses to reach another."""
    links = []
    for name, service in SERVICES.items():
        for key, value in environment(service).items():
            if key in LINK_VARIABLES and value:
                for address in value.split(","):
                    host, port = host_port(address.strip())
                    links.append((f"{name}: {key}", name, host, port))
        if "--bootstrap-server" in " ".join(command(service)):
            for address in re.findall(r"--bootstrap-server\s+(\S+)", " ".join(command(service))):
                if not address.startswith(('"$', "$")):
                    host, port = host_port(address.strip('"'))
                    links.append((f"{name}: --bootstrap-server", name, host, port))
    for job in PROMETHEUS["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = host_port(target)
                links.append((f"prometheus.yml job {job['job_name']}", "prometheus", host, port))
        for dns in job.get("dns_sd_configs", []):
            for dns_name in dns["names"]:
                links.append((f"prometheus.yml job {job['job_name']} (DNS)", "prometheus", dns_name, int(dns["port"])))
    for alerting in PROMETHEUS["alerting"]["alertmanagers"]:
        for static in alerting["static_configs"]:
            for target in static["targets"]:
                host, port = host_port(target)
                links.append(("prometheus.yml alerting", "prometheus", host, port))
    for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.y*ml")):
        for source in load_yaml(path)["datasources"]:
            if source.get("url"):
                host, port = host_port(source["url"])
            else:
                host, port = source["jsonData"]["host"], int(source["jsonData"]["port"])
            links.append((f"grafana data source {source['name']}", "grafana", host, port))
    return links


LINKS = _links()


@pytest.mark.parametrize(("where", "origin", "host", "port"), LINKS, ids=[f"{w} -> {h}:{p}" for w, _, h, p in LINKS])
def test_address_names_a_service_and_a_port_it_listens_on(where: str, origin: str, host: str, port: int) -> None:
    target = origin if host in ("localhost", "127.0.0.1") else host
    assert target in SERVICES, f"{where} reaches {host}:{port}, but docker-compose.yml has no service {host!r}"
    ports = listening_ports(target)
    assert port in ports, f"{where} reaches {host}:{port}, but {target} listens on {sorted(ports) or 'nothing'}"


def test_links_cover_the_pipeline() -> None:
    reached = {(host, port) for _, _, host, port in LINKS}
    expected = {("kafka", 9092), ("schema-registry", 8081), ("clickhouse", 8123), ("stream", 9101), ("sink", 9102),
                ("api", 8000), ("simulator", 9103), ("alertmanager", 9093), ("prometheus", 9090)}
    assert expected <= reached, f"nothing reaches {sorted(expected - reached)}"


def _advertised() -> list[tuple[str, str, int]]:
    env = environment(SERVICES["kafka"])
    listeners = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    return [(listener.split("://")[0], *host_port(listener)) for listener in listeners]


@pytest.mark.parametrize(("listener", "host", "port"), _advertised(), ids=lambda value: str(value))
def test_kafka_advertises_addresses_clients_can_reach(listener: str, host: str, port: int) -> None:
    assert port in listening_ports("kafka"), f"Kafka advertises {host}:{port} ({listener}) but does not listen there"
    if host in ("localhost", "127.0.0.1"):
        assert port in {container for _, container in published(SERVICES["kafka"])}, (
            f"Kafka advertises {host}:{port} to the Docker host, but the port is not published"
        )
    else:
        assert host == "kafka", f"Kafka advertises {host}:{port}; other containers know it as kafka"


def test_kafka_cluster_id_is_valid() -> None:
    cluster_id = environment(SERVICES["kafka"])["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, (
        f"CLUSTER_ID {cluster_id!r} must be 16 bytes in base64url without padding (22 characters)"
    )


@pytest.mark.parametrize("name", sorted(name for name, service in SERVICES.items() if service.get("ports")))
def test_published_ports_are_listened_on(name: str) -> None:
    for _, container in published(SERVICES[name]):
        assert container in listening_ports(name), f"{name} publishes {container}, where nothing listens"


@pytest.mark.parametrize("name", sorted(name for name, service in SERVICES.items() if service.get("healthcheck")))
def test_healthcheck_asks_a_port_the_service_listens_on(name: str) -> None:
    test = SERVICES[name]["healthcheck"]["test"]
    text = " ".join(test) if isinstance(test, list) else test
    ports = [int(port) for port in re.findall(r"(?:localhost|127\.0\.0\.1):(\d+)", text)]
    assert ports, f"{name}'s health check asks no local port: {text}"
    for port in ports:
        assert port in listening_ports(name), (
            f"{name}'s health check asks port {port}; it listens on {sorted(listening_ports(name))}"
        )


# --- start order --------------------------------------------------------------------------------------

def _dependencies() -> list[tuple[str, str, str]]:
    found = []
    for name, service in SERVICES.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {dependency: {"condition": "service_started"} for dependency in depends}
        found += [(name, dependency, spec.get("condition", "service_started")) for dependency, spec in depends.items()]
    return found


DEPENDENCIES = _dependencies()


@pytest.mark.parametrize(("name", "dependency", "condition"), DEPENDENCIES, ids=lambda value: value)
def test_dependency_is_sound(name: str, dependency: str, condition: str) -> None:
    assert dependency in SERVICES, f"{name} depends on {dependency!r}, which is no service"
    target = SERVICES[dependency]
    if condition == "service_healthy":
        assert target.get("healthcheck"), f"{name} waits for {dependency} to be healthy, but it has no health check"
    elif condition == "service_completed_successfully":
        assert str(target.get("restart", "no")) == "no", f"{name} waits for one-shot {dependency}, which restarts"
    else:
        assert condition == "service_started", f"unknown condition {condition}"
    if not SERVICES[name].get("profiles"):
        assert not target.get("profiles"), f"{name} always starts but depends on {dependency}, which is in a profile"


# The order the stack needs, whatever else is added.
START_ORDER = [
    ("schema-registry", "kafka", "service_healthy"),
    ("kafka-init", "kafka", "service_healthy"),
    ("stream", "kafka", "service_healthy"),
    ("stream", "schema-registry", "service_healthy"),
    ("sink", "kafka", "service_healthy"),
    ("sink", "schema-registry", "service_healthy"),
    ("sink", "clickhouse", "service_healthy"),
    ("sink", "migrate", "service_completed_successfully"),
    ("migrate", "clickhouse", "service_healthy"),
    ("api", "migrate", "service_completed_successfully"),
    ("api", "clickhouse", "service_healthy"),
    ("simulator", "schema-registry", "service_healthy"),
    ("simulator", "kafka-init", "service_completed_successfully"),
    ("grafana", "prometheus", "service_healthy"),
    ("grafana", "clickhouse", "service_healthy"),
]


@pytest.mark.parametrize(("name", "dependency", "condition"), START_ORDER, ids=lambda value: value)
def test_start_order(name: str, dependency: str, condition: str) -> None:
    assert (name, dependency, condition) in DEPENDENCIES, f"{name} should depend on {dependency} ({condition})"


def test_no_dependency_cycle() -> None:
    graph = {name: {dependency for origin, dependency, _ in DEPENDENCIES if origin == name} for name in SERVICES}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join(path + (name,))}"
        if name in done:
            return
        for dependency in graph[name]:
            visit(dependency, path + (name,))
        done.add(name)

    for name in SERVICES:
        visit(name, ())


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_long_running_services_restart_and_report_health(name: str) -> None:
    service = SERVICES[name]
    if str(service.get("restart", "no")) == "no":
        return  # a one-shot (or the simulator, which runs to its --events)
    assert service["restart"] in ("unless-stopped", "always", "on-failure"), f"{name}: restart {service['restart']}"
    assert service.get("healthcheck"), f"{name} runs for good but has no health check"


# --- volumes and mounted files ------------------------------------------------------------------------

def _mounts() -> list[tuple[str, str, str]]:
    return [(name, source, target) for name, service in SERVICES.items() for source, target in volumes(service)]


@pytest.mark.parametrize(("name", "source", "target"), _mounts(), ids=lambda value: value)
def test_mount_source_exists(name: str, source: str, target: str) -> None:
    if source.startswith((".", "/")):
        path = (ROOT / source).resolve()
        if path == ALERTS_FILE and not path.exists():
            pytest.skip("deploy/prometheus/alerts.yml is not written yet")
        assert path.exists(), f"{name} mounts {source}, which does not exist"
    else:
        assert source in (COMPOSE.get("volumes") or {}), f"{name} uses volume {source!r}, not declared under volumes:"


@pytest.mark.parametrize(("name", "path"), [
    ("kafka", "/var/lib/kafka/data"),
    ("clickhouse", "/var/lib/clickhouse"),
    ("prometheus", "/prometheus"),
    ("grafana", "/var/lib/grafana"),
])
def test_data_lives_in_named_volumes(name: str, path: str) -> None:
    named = {target: source for source, target in volumes(SERVICES[name]) if not source.startswith((".", "/"))}
    assert path in named, f"{name}'s data ({path}) is not on a named volume"


def test_kafka_writes_to_its_volume() -> None:
    assert environment(SERVICES["kafka"])["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"


@pytest.mark.parametrize(
    "path", sorted((CLICKHOUSE_DIR / "config.d").glob("*.xml")) + sorted((CLICKHOUSE_DIR / "users.d").glob("*.xml")),
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_clickhouse_file_is_mounted(path: Path) -> None:
    targets = {target: (ROOT / source).resolve() for source, target in volumes(SERVICES["clickhouse"])}
    where = {target for target, source in targets.items() if source == path}
    assert where, f"{path.relative_to(ROOT)} is not mounted into the clickhouse container"
    folder = f"/etc/clickhouse-server/{path.parent.name}/"
    assert all(target.startswith(folder) for target in where), f"{path.name} should be mounted under {folder}"


# --- the image ----------------------------------------------------------------------------------------

def test_image_is_python_311_slim() -> None:
    bases = [args.split()[0] for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert bases[-1] == "python:3.11-slim", bases
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert required == ">=3.11", f"requires-python is {required}; update the base image to match"


def test_image_installs_the_pinned_dependencies_of_pyproject() -> None:
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    installs = [segment.strip() for run in runs for segment in re.split(r"&&|;", run) if "pip install" in segment]
    assert installs, "the Dockerfile installs nothing with pip"
    for install in installs:
        targets = [token for token in shlex.split(install.split("pip install", 1)[1]) if not token.startswith("-")]
        assert targets == ["."], f"`{install}` should install the package from pyproject.toml (`pip install .`) only"
        assert "-r" not in install.split() and "--requirement" not in install and "==" not in install, (
            f"`{install}` pins versions outside pyproject.toml"
        )
    assert not list(ROOT.glob("requirements*.txt")), "a requirements file is a second list of versions"
    copies = [args for keyword, args in dockerfile_instructions() if keyword == "COPY"]
    first_install = next(index for index, (keyword, args) in enumerate(dockerfile_instructions())
                         if keyword == "RUN" and "pip install" in args)
    copied_before = [args for keyword, args in dockerfile_instructions()[:first_install] if keyword == "COPY"]
    assert any("pyproject.toml" in args for args in copied_before), "pyproject.toml must be copied before pip install"
    assert copies


def _dockerignored(path: str) -> bool:
    ignored = False
    for pattern in DOCKERIGNORE.read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.split("/")[0], pattern):
            ignored = not negate
    return ignored


def test_image_copies_files_that_exist_and_are_not_ignored() -> None:
    for keyword, args in dockerfile_instructions():
        if keyword != "COPY":
            continue
        sources = [token for token in shlex.split(args) if not token.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            assert not _dockerignored(source), f"COPY {source}: .dockerignore leaves it out of the build context"


@pytest.mark.parametrize("pattern", [".venv", "data", ".git", ".pytest_cache"])
def test_dockerignore_keeps_local_state_out(pattern: str) -> None:
    assert _dockerignored(pattern), f".dockerignore should exclude {pattern}"


def test_image_runs_as_a_non_root_user() -> None:
    users_set = [args.split(":")[0] for keyword, args in dockerfile_instructions() if keyword == "USER"]
    user = users_set[-1] if users_set else "root"
    assert user not in ("root", "0"), f"the image runs as {user}; add a USER that is not root"


def test_entrypoint_is_the_ievents_command() -> None:
    entrypoints = [json.loads(args) for keyword, args in dockerfile_instructions() if keyword == "ENTRYPOINT"]
    assert entrypoints and entrypoints[-1] == ["ievents"], f"ENTRYPOINT should be [\"ievents\"], is {entrypoints}"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.get("ievents") == "ievents.cli:app"


def _image_commands() -> list[tuple[str, list[str]]]:
    found = [("Dockerfile CMD", json.loads(args)) for keyword, args in dockerfile_instructions() if keyword == "CMD"]
    return found + [(name, command(SERVICES[name])) for name in OWN_SERVICES]


@pytest.mark.parametrize(("where", "args"), _image_commands(), ids=[where for where, _ in _image_commands()])
def test_image_command_is_one_the_cli_has(where: str, args: list[str]) -> None:
    import typer

    from ievents.cli import app

    group = typer.main.get_command(app)  # typer ships its own copy of click: no isinstance checks on click's classes
    if args == ["--help"]:
        return
    name, *rest = args
    cli_command = getattr(group, "commands", {}).get(name)
    assert cli_command is not None, f"{where}: `ievents {name}` is no command of ievents.cli.app"
    try:
        cli_command.make_context(name, list(rest))  # parses and converts every option, runs nothing
    except Exception as exc:  # click's usage errors (unknown option, a value of the wrong type)
        message = exc.format_message() if hasattr(exc, "format_message") else repr(exc)
        pytest.fail(f"{where}: `ievents {' '.join(args)}` is refused by the CLI: {message}")


# --- Prometheus and Alertmanager ----------------------------------------------------------------------

def test_prometheus_globals() -> None:
    assert PROMETHEUS["global"]["scrape_interval"] == "15s"
    assert PROMETHEUS["global"]["evaluation_interval"] == "15s"
    assert PROMETHEUS["rule_files"] == ["/etc/prometheus/alerts.yml"]
    mounted = {target: source for source, target in volumes(SERVICES["prometheus"])}
    assert (ROOT / mounted["/etc/prometheus/alerts.yml"]).resolve() == ALERTS_FILE, "alerts.yml is not mounted"
    assert (ROOT / mounted["/etc/prometheus/prometheus.yml"]).resolve() == PROMETHEUS_FILE
    assert option(command(SERVICES["prometheus"]), "--config.file") == "/etc/prometheus/prometheus.yml"
    targets = [target for alerting in PROMETHEUS["alerting"]["alertmanagers"]
               for static in alerting["static_configs"] for target in static["targets"]]
    assert targets == ["alertmanager:9093"]


# job name -> (service, port, metrics path)
SCRAPE_JOBS = {
    "ievents-stream": ("stream", 9101, "/metrics"),
    "ievents-sink": ("sink", 9102, "/metrics"),
    "ievents-api": ("api", 8000, "/metrics"),
    "ievents-simulator": ("simulator", 9103, "/metrics"),
    "prometheus": ("localhost", 9090, "/metrics"),
}


@pytest.mark.parametrize("job_name", sorted(SCRAPE_JOBS))
def test_scrape_job(job_name: str) -> None:
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    assert job_name in jobs, f"prometheus.yml has no scrape job {job_name}"
    job = jobs[job_name]
    host, port, path = SCRAPE_JOBS[job_name]
    targets = [host_port(target) for static in job.get("static_configs", []) for target in static["targets"]]
    targets += [(name, int(dns["port"])) for dns in job.get("dns_sd_configs", []) for name in dns["names"]]
    assert targets == [(host, port)], f"job {job_name} scrapes {targets}, expected {host}:{port}"
    assert job.get("metrics_path", "/metrics") == path


def _job_matchers() -> list[str]:
    if not ALERTS_FILE.exists():
        return []
    return sorted(set(re.findall(r'job\s*=~?\s*"([^"]+)"', ALERTS_FILE.read_text())))


@pytest.mark.parametrize("matcher", _job_matchers())
def test_alert_job_matchers_match_scrape_jobs(matcher: str) -> None:
    jobs = [job["job_name"] for job in PROMETHEUS["scrape_configs"]]
    assert any(re.fullmatch(matcher, job) for job in jobs), f"alerts.yml selects job {matcher!r}; jobs are {jobs}"


def test_promtool_accepts_the_config(tmp_path: Path) -> None:
    if not shutil.which("promtool"):
        pytest.skip("promtool is not installed (Debian package prometheus)")
    config = dict(PROMETHEUS)
    config["rule_files"] = [str(ALERTS_FILE)] if ALERTS_FILE.exists() else []
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_routes_by_severity() -> None:
    config = load_yaml(ALERTMANAGER_FILE)
    route = config["route"]
    receivers = {receiver["name"] for receiver in config["receivers"]}
    assert route["receiver"] in receivers
    assert {"alertname", "integration"} <= set(route["group_by"]), route["group_by"]
    by_severity = {}
    for child in route.get("routes", []):
        assert child["receiver"] in receivers, f"route to unknown receiver {child['receiver']}"
        for matcher in child.get("matchers", []):
            match = re.fullmatch(r'severity\s*=\s*"?(\w+)"?', matcher)
            if match:
                by_severity[match[1]] = child["receiver"]
    assert {"critical", "warning"} <= set(by_severity), f"routes by severity: {by_severity}"
    assert by_severity["critical"] != by_severity["warning"]


def test_amtool_accepts_the_config() -> None:
    if not shutil.which("amtool"):
        pytest.skip("amtool is not installed (Debian package prometheus-alertmanager)")
    result = subprocess.run(["amtool", "check-config", str(ALERTMANAGER_FILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_is_started_with_its_config() -> None:
    mounted = {target: (ROOT / source).resolve() for source, target in volumes(SERVICES["alertmanager"])}
    config = option(command(SERVICES["alertmanager"]), "--config.file")
    assert mounted.get(config) == ALERTMANAGER_FILE, f"alertmanager reads {config}, where the file is not mounted"


# --- Grafana ------------------------------------------------------------------------------------------

def datasources() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.y*ml")):
        for source in load_yaml(path)["datasources"]:
            found[source["uid"]] = source
    return found


DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())


def panels() -> list[dict[str, Any]]:
    found = []
    for panel in DASHBOARD["panels"]:
        found.append(panel)
        found += panel.get("panels", [])
    return [panel for panel in found if panel.get("type") != "row"]


def prometheus_expressions() -> list[str]:
    exprs = [target["expr"] for panel in panels() for target in panel.get("targets", []) if "expr" in target]
    for variable in DASHBOARD.get("templating", {}).get("list", []):
        query = variable.get("query")
        exprs.append(query["query"] if isinstance(query, dict) else str(query or ""))
    return exprs


def test_grafana_mounts_provisioning_and_dashboards() -> None:
    mounted = {target: (ROOT / source).resolve() for source, target in volumes(SERVICES["grafana"])
               if source.startswith(".")}
    assert mounted.get("/etc/grafana/provisioning") == GRAFANA / "provisioning"
    for path in sorted((GRAFANA / "provisioning" / "dashboards").glob("*.y*ml")):
        for provider in load_yaml(path)["providers"]:
            folder = provider["options"]["path"]
            assert mounted.get(folder) == DASHBOARD_FILE.parent, f"dashboards provider reads {folder}, not mounted"


def test_grafana_data_sources() -> None:
    sources = datasources()
    assert {"prometheus", "clickhouse"} <= set(sources), sorted(sources)
    assert sources["prometheus"]["type"] == "prometheus"
    clickhouse = sources["clickhouse"]
    assert clickhouse["type"] == "grafana-clickhouse-datasource"
    grafana_env = environment(SERVICES["grafana"])
    plugins = [plugin.split()[0] for plugin in grafana_env["GF_INSTALL_PLUGINS"].split(",")]
    assert "grafana-clickhouse-datasource" in plugins, "the ClickHouse plugin is not installed (GF_INSTALL_PLUGINS)"
    assert clickhouse["jsonData"]["protocol"] == "http" and clickhouse["jsonData"]["defaultDatabase"] == "ievents"
    assert clickhouse["jsonData"]["username"] == "analyst", "Grafana should read ClickHouse as the readonly analyst"
    password = re.fullmatch(r"\$\{?(\w+)\}?", clickhouse["secureJsonData"]["password"])
    assert password, "the ClickHouse password should come from the grafana container's environment"
    clickhouse_env = environment(SERVICES["clickhouse"])
    assert grafana_env.get(password[1]) == clickhouse_env["CLICKHOUSE_ANALYST_PASSWORD"], (
        "Grafana's analyst password differs from the one the clickhouse container gives the analyst user"
    )


def test_dashboard_panels_use_provisioned_data_sources() -> None:
    uids = set(datasources())
    for panel in panels():
        for item in [panel, *panel.get("targets", [])]:
            source = item.get("datasource")
            if isinstance(source, dict) and source.get("uid") not in (None, "-- Grafana --", "-- Mixed --"):
                assert source["uid"] in uids, f"panel {panel['title']!r} uses data source {source['uid']!r}"


def _normalise(expr: str) -> str:
    return re.sub(r"\s+", "", expr)


# What operators look at first: each must be on the dashboard.
REQUIRED_QUERIES = [
    "sum by (status) (rate(ievents_stream_events_total[5m]))",
    "ievents:integration_failure_ratio:rate5m",
    "sum by (stage, topic, partition) (ievents_consumer_lag_messages)",
    "histogram_quantile(0.5, sum by (le) (rate(ievents_sink_event_delay_seconds_bucket[5m])))",
    "histogram_quantile(0.99, sum by (le) (rate(ievents_sink_event_delay_seconds_bucket[5m])))",
    "sum by (reason) (rate(ievents_stream_dead_letters_total[5m]))",
    "sum by (reason) (rate(ievents_sink_dead_letters_total[5m]))",
    "rate(ievents_sink_rows_inserted_total[1m])",
    "ievents_api_request_duration_seconds_bucket",
]


@pytest.mark.parametrize("query", REQUIRED_QUERIES)
def test_dashboard_has_query(query: str) -> None:
    assert any(_normalise(query) in _normalise(expr) for expr in prometheus_expressions()), (
        f"no dashboard panel queries {query}"
    )


def metrics_in_code() -> set[str]:
    names = set()
    for path in (ROOT / "ievents").rglob("*.py"):
        names.update(re.findall(r"""["'](ievents_[a-z0-9_]+)["']""", path.read_text()))
    return names


def recording_rules() -> set[str]:
    rules = load_yaml(ALERTS_FILE) if ALERTS_FILE.exists() else {"groups": []}
    return {rule["record"] for group in rules.get("groups", []) for rule in group.get("rules", []) if "record" in rule}


DASHBOARD_METRICS = sorted(
    {name for expr in prometheus_expressions() for name in re.findall(r"\bievents[_:][\w:]*", expr)}
)


@pytest.mark.parametrize("metric", DASHBOARD_METRICS)
def test_dashboard_metric_exists(metric: str) -> None:
    if ":" in metric:
        if not ALERTS_FILE.exists():
            pytest.skip("deploy/prometheus/alerts.yml (the recording rules) is not written yet")
        assert metric in recording_rules(), f"the dashboard uses {metric}, which alerts.yml does not record"
        return
    known = metrics_in_code()
    base = re.sub(r"_(bucket|count|sum)$", "", metric)
    assert metric in known or base in known, f"the dashboard uses {metric}, which no code under ievents/ exports"


def test_dashboard_top_error_templates_from_clickhouse() -> None:
    queries = [target["rawSql"] for panel in panels() for target in panel.get("targets", []) if "rawSql" in target]
    assert queries, "no panel reads ClickHouse"
    sql = next((query for query in queries if "message_template" in query), None)
    assert sql, "no ClickHouse panel groups by message_template"
    flat = " ".join(sql.split())
    for part in ("FROM ievents.integration_events FINAL", "status = 'failure'", "$__timeFilter(occurred_at)",
                 "error_category", "count()"):
        assert part in flat, f"the top error templates query should contain {part!r}: {flat}"
    schema = (ROOT / "ievents" / "sink" / "migrations" / "0001_integration_events.sql").read_text()
    columns = r"\b(message_template|error_category|occurred_at|status|integration_id|account_id)\b"
    for column in re.findall(columns, sql):
        assert re.search(rf"^\s+{column}\s", schema, flags=re.M), f"integration_events has no column {column}"


# --- ClickHouse users ---------------------------------------------------------------------------------

def _profile(name: str) -> ET.Element:
    profile = users().find(f"profiles/{name}")
    assert profile is not None, f"users.d has no profile {name!r}"
    return profile


def test_analyst_is_readonly_on_the_events_database() -> None:
    analyst = users().find("users/analyst")
    assert analyst is not None, "users.d has no analyst user"
    profile = _profile(analyst.findtext("profile"))
    assert profile.findtext("readonly") in ("1", "2"), "the analyst profile must set readonly = 1 (or 2)"
    for limit in ("max_execution_time", "max_memory_usage"):
        assert int(profile.findtext(limit) or 0) > 0, f"the analyst profile should limit {limit}"
    grants = [query.text.strip() for query in analyst.findall("grants/query")]
    database = container_settings("api").clickhouse_database
    assert grants == [f"GRANT SELECT ON {database}.*"], f"the analyst should only read {database}: {grants}"
    assert analyst.find("password") is not None or analyst.find("password_sha256_hex") is not None
    quota = analyst.findtext("quota")
    assert users().find(f"quotas/{quota}") is not None, f"quota {quota} is not defined"


def test_pipeline_user_matches_the_dsn() -> None:
    dsn = urlparse(container_settings("sink").clickhouse_url)
    writer = users().find(f"users/{dsn.username}")
    assert writer is not None, f"IEVENTS_CLICKHOUSE_URL logs in as {dsn.username!r}, a user users.d lacks"
    password = writer.find("password")
    variable = password.get("from_env")
    assert variable, "the pipeline user's password should come from the clickhouse container's environment"
    expected = environment(SERVICES["clickhouse"]).get(variable)
    assert expected is not None, f"the clickhouse service does not set {variable}"
    assert dsn.password == expected, "IEVENTS_CLICKHOUSE_URL's password differs from the clickhouse user's"
    assert quote(expected, safe="") == expected, "the default writer password must be URL-safe (it is in a URL)"
    database = container_settings("sink").clickhouse_database
    grants = [query.text.strip() for query in writer.findall("grants/query")]
    assert f"GRANT ALL ON {database}.*" in grants, f"the pipeline user needs every right on {database}: {grants}"
    assert (dsn.hostname, dsn.port) == ("clickhouse", 8123)


def test_clickhouse_connect_reads_the_credentials_from_the_dsn() -> None:
    """The processes pass IEVENTS_CLICKHOUSE_URL to clickhouse_connect.get_client(dsn=...) as it is."""
    from clickhouse_connect import driver

    parse = getattr(driver, "_parse_connection_params", None)
    if parse is None:
        pytest.skip("this clickhouse-connect version parses DSNs elsewhere")
    dsn = container_settings("sink").clickhouse_dsn
    host, username, password, port, _database, interface = parse(None, None, None, None, None, None, False, dsn, {})
    expected = urlparse(dsn)
    assert (host, username, password, port, interface) == (
        "clickhouse", expected.username, expected.password, 8123, "http"), (host, username, port, interface)


def test_default_user_only_from_inside_the_container() -> None:
    networks = users().find("users/default/networks")
    assert networks is not None and networks.get("replace") == "replace"
    assert sorted(ip.text for ip in networks.findall("ip")) == ["127.0.0.1", "::1"]


def test_profile_settings_are_clickhouse_settings() -> None:
    names = set()
    for profile in users().find("profiles"):
        for setting in profile:
            if setting.tag == "constraints":
                names.update(constraint.tag for constraint in setting)
            else:
                names.add(setting.tag)
    script = (
        "import chdb, json, sys; names = json.loads(sys.argv[1]); "
        "rows = chdb.query('SELECT name FROM system.settings', 'JSONCompact').data(); "
        "known = {row[0] for row in json.loads(rows)['data']}; print(json.dumps(sorted(set(names) - known)))"
    )
    result = subprocess.run([sys.executable, "-c", script, json.dumps(sorted(names))], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    unknown = json.loads(result.stdout.strip().splitlines()[-1])
    assert not unknown, f"users.d sets what ClickHouse has no setting for: {unknown}"
