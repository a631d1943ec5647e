"""The shared lab server's deployment files: docker-compose.yml (validated by Compose v2 when the
CLI is here, else read as YAML), its self-test override, .env.example, the Dockerfile and the
containers' health check. `deploy/selftest/run.sh` builds and runs the stack for real; these
tests check the wiring that the script cannot (GPU reservation, the postgres/redis services)."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from service_lab import free_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
OVERRIDE = ROOT / "deploy" / "selftest" / "compose.override.yml"
SELFTEST_ENV = ROOT / "deploy" / "selftest" / "selftest.env"
ENV_EXAMPLE = ROOT / ".env.example"
PROJECT_SERVICES = {"mlflow", "api", "worker"}
SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_SECRET_KEY")
COMPOSE_SECONDS = 120  # `docker compose config` reads files only; a hang is a failure


@cache
def compose_cli() -> list[str] | None:
    """`docker compose` (v2) when this machine has the CLI and its plugin, else None."""
    if shutil.which("docker") is None:
        return None
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True,
                           timeout=COMPOSE_SECONDS)
    return ["docker", "compose"] if probe.returncode == 0 and "v2." in probe.stdout else None


def env_lines(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    """.env.example with its required secrets filled in, as an operator's .env would be."""
    values = env_lines(ENV_EXAMPLE) | {key: f"test-{key.lower()}" for key in SECRETS}
    path = tmp_path / ".env"
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


def resolved(env_file: Path, *overrides: Path) -> dict[str, Any]:
    """The compose model: `docker compose config` when the CLI is here (validates it, resolves
    .env), else the YAML itself with anchors merged (variables left unresolved)."""
    cli = compose_cli()
    if cli is None:
        model = yaml.safe_load(COMPOSE.read_text())
        for override in overrides:
            model = merge(model, yaml.load(override.read_text(), Loader=ResetLoader))
        return model
    files = [arg for path in (COMPOSE, *overrides) for arg in ("-f", str(path))]
    done = subprocess.run([*cli, "--project-directory", str(ROOT), "--env-file", str(env_file),
                           *files, "config", "--format", "json"], capture_output=True, text=True,
                          timeout=COMPOSE_SECONDS)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class Reset:
    """A `!reset` value of a compose override: removes the key from the merged model."""


class ResetLoader(yaml.SafeLoader):
    pass


ResetLoader.add_constructor("!reset", lambda loader, node: Reset())


def merge(base: Any, override: Any) -> Any:
    """Compose's merge, enough for these files: mappings merge by key, `!reset` removes."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Reset):
            merged.pop(key, None)
        else:
            merged[key] = merge(base.get(key), value) if key in base else value
    return merged


def test_compose_config_is_valid_with_the_documented_env(env_file: Path) -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Compose v2 CLI here: the YAML checks below cover the file")
    done = subprocess.run([*cli, "--project-directory", str(ROOT), "--env-file", str(env_file),
                           "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                          timeout=COMPOSE_SECONDS)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("secret", SECRETS)
def test_compose_refuses_to_start_without_a_secret(env_file: Path, secret: str) -> None:
    """A secret left empty (as in .env.example) is an error naming it, not an empty password."""
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Compose v2 CLI here")
    blank = env_file.read_text().replace(f"{secret}=test-{secret.lower()}", f"{secret}=")
    env_file.write_text(blank)
    done = subprocess.run([*cli, "--project-directory", str(env_file.parent), "--env-file",
                           str(env_file), "-f", str(COMPOSE), "config", "-q"],
                          capture_output=True, text=True, timeout=COMPOSE_SECONDS)
    assert done.returncode != 0
    assert f"required variable {secret} is missing a value" in done.stderr, done.stderr


def test_services_volumes_and_healthchecks(env_file: Path) -> None:
    model = resolved(env_file)
    services = model["services"]
    assert set(services) == {"postgres", "redis", "mlflow", "api", "worker"}
    assert {"pgdata", "redisdata", "mlflow", "data"} <= set(model["volumes"])
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    mounts = {name: json.dumps(service.get("volumes", [])) for name, service in services.items()}
    assert "pgdata" in mounts["postgres"] and "/var/lib/postgresql/data" in mounts["postgres"]
    assert "redisdata" in mounts["redis"]
    assert "/srv/mlflow" in mounts["mlflow"] and "/data" in mounts["worker"]
    # Queued jobs survive a Redis restart only with persistence on.
    assert "--appendonly" in " ".join(services["redis"]["command"])
    # The project's services run one image built from this Dockerfile.
    images = {services[name]["image"] for name in PROJECT_SERVICES}
    assert len(images) == 1 and next(iter(images)).startswith("phenolab:")


def test_startup_order_waits_for_health(env_file: Path) -> None:
    services = resolved(env_file)["services"]
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert {depends[dep]["condition"] for dep in ("redis", "mlflow")} == {"service_healthy"}


def test_mlflow_server_is_wired_for_the_stack(env_file: Path) -> None:
    services = resolved(env_file)["services"]
    mlflow = services["mlflow"]
    command = " ".join(mlflow["command"]) if isinstance(mlflow["command"], list) else mlflow["command"]
    assert command.startswith("mlflow server") and "--serve-artifacts" in command
    hosts = re.search(r"--allowed-hosts[ =](\S+)", command).group(1).split(",")
    assert "mlflow" in hosts and any(h.startswith("mlflow:") for h in hosts)
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert "MLFLOW_FLASK_SERVER_SECRET_KEY" in mlflow["environment"]  # for basic-auth
    assert "--app-name" in COMPOSE.read_text()  # basic-auth is one setting (MLFLOW_APP_NAME)
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["MLFLOW_TRACKING_URI"].startswith("http://mlflow:")
        assert env["PHENOLAB_QUEUE_URL"].startswith("redis://") and "@redis:6379/" in env[
            "PHENOLAB_QUEUE_URL"]


def test_worker_reserves_the_gpus_without_replicas(env_file: Path) -> None:
    worker = resolved(env_file)["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    assert devices[0]["driver"] == "nvidia"
    # `compute` brings CUDA's libraries in: with [gpu] plus `utility` alone, torch sees no GPU.
    assert {"gpu", "compute", "utility"} <= set(devices[0]["capabilities"])
    assert devices[0].get("count") in ("all", -1)  # one worker owns every GPU, pins each job
    assert worker["deploy"].get("replicas") in (None, 1)  # replicas with count 1 share GPU 0


def test_every_setting_comes_from_env_and_is_documented(env_file: Path) -> None:
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", COMPOSE.read_text()))
    documented = set(env_lines(ENV_EXAMPLE))
    assert used <= documented, f"not in .env.example: {sorted(used - documented)}"
    assert documented <= used, f"in .env.example but unused: {sorted(documented - used)}"
    text = ENV_EXAMPLE.read_text()
    for key in documented:  # each one has a comment right above it
        assert re.search(rf"#[^\n]*\n(#[^\n]*\n)*{key}=", text), f"{key} is not explained"
    model = resolved(env_file)
    if compose_cli() is not None:  # resolved: the secrets reached the services
        assert model["services"]["mlflow"]["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"] == (
            "test-mlflow_admin_password")
        assert "test-redis_password" in model["services"]["worker"]["environment"][
            "PHENOLAB_QUEUE_URL"]


def test_selftest_override_uses_host_network_and_drops_the_gpus() -> None:
    model = resolved(SELFTEST_ENV, OVERRIDE)
    for name, service in model["services"].items():
        assert service["network_mode"] == "host", name
        assert not service.get("ports"), f"{name} publishes ports under host networking"
    for name in PROJECT_SERVICES:
        assert model["services"][name]["build"]["network"] == "host"
    assert not model["services"]["worker"].get("deploy")
    env = env_lines(SELFTEST_ENV)
    queue = model["services"]["worker"]["environment"]["PHENOLAB_QUEUE_URL"]
    assert queue.startswith("redis://127.0.0.1:6379/")
    if compose_cli() is not None:
        assert queue.endswith(f"/{env['SELFTEST_REDIS_DB']}")
        store = model["services"]["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
        assert store == f"postgresql://postgres@127.0.0.1:5432/{env['SELFTEST_DATABASE']}"
    # Ports that do not clash with the machine's services or a default `phenolab serve`.
    assert {env["MLFLOW_PORT"], env["PHENOLAB_API_PORT"]}.isdisjoint({"5000", "8000", "5432", "6379"})


def test_dockerfile_builds_one_pinned_non_root_image() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax=", text, re.M)  # that frontend image cannot be pulled
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages and all(stage == "python:3.11-slim-bookworm" for stage in stages)
    final = text.split("\nFROM ")[-1]
    assert re.search(r"^USER (?!root|0\b)\S+", final, re.M)
    assert re.search(r"^HEALTHCHECK .*phenolab-healthcheck", final, re.M)
    assert not re.search(r"apt-get install.*(gcc|build-essential)", final)
    assert re.search(r"^ENV NVIDIA_DRIVER_CAPABILITIES=\S*compute", final, re.M)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= set(deps)
    assert "pyproject.toml" in text  # the image installs exactly those pins
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "mlruns", ".env"} <= set(ignored)


# ---------------------------------------------------------------- the containers' health check


class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200 if self.path == "/health" else 500)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def healthcheck(*targets: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "deploy" / "healthcheck.py"), *targets],
                          capture_output=True, text=True, timeout=30)


def test_healthcheck_passes_only_when_every_target_answers(http_server: str) -> None:
    assert healthcheck(f"{http_server}/health").returncode == 0
    failed = healthcheck(f"{http_server}/health", f"{http_server}/broken")
    assert failed.returncode == 1 and "/broken" in failed.stderr
    assert healthcheck(f"http://127.0.0.1:{free_port()}/health").returncode == 1


def test_healthcheck_pings_redis_and_hides_the_password() -> None:
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2).ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    assert healthcheck("redis://127.0.0.1:6379/0").returncode == 0
    failed = healthcheck(f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    assert failed.returncode == 1 and "hunter2" not in failed.stderr


def test_healthcheck_defaults_to_the_apis_healthz(http_server: str, monkeypatch) -> None:
    port = http_server.rsplit(":", 1)[1]
    monkeypatch.setenv("PHENOLAB_API_PORT", port)
    # Ok answers 500 on /healthz: the default target is that path on PHENOLAB_API_PORT.
    failed = healthcheck()
    assert failed.returncode == 1 and f"127.0.0.1:{port}/healthz" in failed.stderr


@pytest.mark.parametrize("app_name", ["", "basic-auth"])
def test_mlflow_basic_auth_is_one_setting(env_file: Path, app_name: str) -> None:
    """MLFLOW_APP_NAME=basic-auth turns MLflow's login on; empty leaves the server open."""
    if compose_cli() is None:
        pytest.skip("no Compose v2 CLI here to interpolate the command")
    env_file.write_text(re.sub(r"^MLFLOW_APP_NAME=.*$", f"MLFLOW_APP_NAME={app_name}",
                               env_file.read_text(), flags=re.M))
    command = resolved(env_file)["services"]["mlflow"]["command"]
    assert ("--app-name" in command) == bool(app_name)
    if app_name:
        assert command[command.index("--app-name") + 1] == "basic-auth"


def test_mlflow_login_config_is_in_the_image_and_caches_logins(env_file: Path, monkeypatch) -> None:
    """The basic-auth config the compose file names is the one the Dockerfile copies, and MLflow
    reads it: admin user, READ by default, verified logins cached (a PBKDF2 hash per request
    otherwise)."""
    import importlib.util

    import mlflow

    # MLflow's own reader, loaded alone: its package needs Flask-WTF, which only the image has.
    spec = importlib.util.spec_from_file_location(
        "mlflow_auth_config", Path(mlflow.__file__).parent / "server" / "auth" / "config.py")
    reader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reader)
    path = resolved(env_file)["services"]["mlflow"]["environment"]["MLFLOW_AUTH_CONFIG_PATH"]
    [source] = re.findall(rf"^COPY (\S+) {re.escape(path)}$", (ROOT / "Dockerfile").read_text(), re.M)
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ROOT / source))
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "x" * 12)
    config = reader.read_auth_config()
    assert config.admin_username == "admin" and config.default_permission == "READ"
    assert config.database_uri == "sqlite:///basic_auth.db"  # in the mlflow volume (working_dir)
    assert config.auth_cache_ttl_seconds > 0
    assert len(env_lines(SELFTEST_ENV)["MLFLOW_ADMIN_PASSWORD"]) >= 12  # MLflow's minimum
