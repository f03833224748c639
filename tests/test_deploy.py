"""The deploy manifests agree with the CLI, the settings, the metrics and each other, and the compose
file's own command lines run.

No Docker engine or cluster here, so nothing below pretends to run one: the static checks read what
`docker compose` and `kubectl` would be given (every `routeq` command line is parsed by the real argparse
parser, ``worker.cli.build_parser()``), and ``test_compose_commands_run_against_real_processes`` runs the
compose file's producer, stand-in and worker command lines as local processes, with the compose
environment, its service host names and ports mapped to a local redis-server, the stand-in and an OTLP
receiver.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import opentelemetry.environment_variables as otel_api_env
import opentelemetry.sdk.environment_variables as otel_sdk_env
import pytest
import yaml

from jobs.connections import connect
from jobs.reports import batch_status
from jobs.settings import Settings
from tests.helpers import api_stats
from tests.otlp_receiver import OtlpReceiver, otlp_receiver
from worker.cli.main import build_parser
from worker.observe.metrics import QUEUE_DEPTH
from worker.sandbox.embedded import Child, free_port, routeq_cmd, wait_port

__all__ = ["otlp_receiver"]  # the fixture, re-exported so pytest finds it

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
README = ROOT / "README.md"

NON_PREFIXED_VARS = {"REDIS_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"}
KNOWN_OTEL_VARS = {
    v for mod in (otel_api_env, otel_sdk_env) for k, v in vars(mod).items() if k.startswith("OTEL_")
}
OTLP_PORT_PROTOCOL = {4317: "grpc", 4318: "http/protobuf"}


# --- loading ------------------------------------------------------------------------------------


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def compose() -> dict[str, Any]:
    (doc,) = load_all(DEPLOY / "compose.yaml")
    return doc


def k8s_docs() -> list[dict[str, Any]]:
    return [d for p in sorted(K8S.glob("*.yaml")) for d in load_all(p)]


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in k8s_docs() if d["kind"] == kind]


def is_routeq_image(image: str | None) -> bool:
    return bool(image) and str(image).split("/")[-1].split(":")[0] == "routeq"


def routeq_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose()["services"].items() if is_routeq_image(s.get("image")) or "build" in s}


def routeq_containers() -> list[dict[str, Any]]:
    return [
        c
        for d in k8s_kind("Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
        if is_routeq_image(c.get("image"))
    ]


def configmap_data() -> dict[str, str]:
    return {k: v for d in k8s_kind("ConfigMap") for k, v in d.get("data", {}).items()}


def duration_s(value: str) -> float:
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(value))
    assert m and any(m.groups()), f"unparsed duration {value!r}"
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


# --- argv checking ------------------------------------------------------------------------------


def check_argv(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` (after ``routeq``) with the real CLI parser; ``AssertionError`` with its message."""
    parser = build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = parser.parse_args(argv)
    except SystemExit:
        raise AssertionError(err.getvalue().strip().splitlines()[-1:] or ["no usage error"]) from None
    assert callable(getattr(args, "func", None)), f"{argv}: parses to no command"
    return args


def dockerfile_instructions() -> list[str]:
    lines = [ln.strip() for ln in (DEPLOY / "Dockerfile").read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def exec_form(instruction: str) -> list[str]:
    """``CMD ["worker"]`` -> ``["worker"]`` (the exec form is the only one that keeps signals working)."""
    _, _, rest = instruction.partition(" ")
    form = json.loads(rest)
    assert isinstance(form, list) and all(isinstance(a, str) for a in form), instruction
    return form


def all_argvs() -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for name, svc in routeq_services().items():
        cmd = svc.get("command")
        assert isinstance(cmd, list), f"compose {name}: use the list form of command"
        out.append((f"compose:{name}", [str(c) for c in cmd]))
    for c in routeq_containers():
        command, args = c.get("command") or [], c.get("args") or []
        if command:
            assert command[0] == "routeq", f"k8s {c['name']}: command must run routeq"
            command = command[1:]
        out.append((f"k8s:{c['name']}", [str(a) for a in [*command, *args]]))
    (cmd,) = [exec_form(i) for i in dockerfile_instructions() if i.startswith("CMD ")]
    out.append(("Dockerfile:CMD", cmd))
    for where, doc in (("README", README),):
        for line in shell_lines(doc):
            # `routeq ...`, `.venv/bin/routeq ...`, `docker compose exec worker routeq ...`
            m = re.match(r"^(?:.*\s)?(?:\S*/)?routeq\s+([a-z].*)$", line)
            if m:
                out.append((where, shlex.split(m.group(1).removesuffix("&").strip())))
    return out


def shell_lines(doc: Path) -> list[str]:
    """Command lines of a Markdown file's shell code blocks (comments and prompts removed)."""
    out: list[str] = []
    lang: str | None = None
    for raw in doc.read_text().splitlines() if doc.exists() else []:
        line = raw.strip()
        if line.startswith("```"):
            lang = None if lang is not None else (line[3:].strip() or "text")
            continue
        if lang in {"sh", "bash", "shell", "console"}:
            line = re.sub(r"\s+#.*$", "", line.removeprefix("$ ")).strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def test_argv_checker_rejects_what_it_should() -> None:
    assert check_argv(["enqueue", "/corpus", "--task", "summarize", "--tag", "tenant=a", "--json"]).json
    args = check_argv(["worker", "--metrics-port=9464", "--burst"])
    assert args.metrics_port == 9464 and args.burst
    for bad in (
        [],
        ["serve"],
        ["worker", "--port", "1"],
        ["worker", "--metrics-port"],
        ["worker", "--metrics-port", "http"],
        ["enqueue"],
        ["enqueue", "a", "b"],
        ["enqueue", "a", "--task", "poem"],
        ["status"],
        ["worker", "--burst=yes"],
    ):
        with pytest.raises(AssertionError):
            check_argv(bad)


def test_every_routeq_command_parses_with_the_real_cli() -> None:
    argvs = all_argvs()
    subs = {argv[0] for _, argv in argvs}
    assert {"worker", "mock-api", "enqueue", "status"} <= subs
    for where, argv in argvs:
        try:
            check_argv(argv)
        except AssertionError as e:
            raise AssertionError(f"{where}: routeq {shlex.join(argv)}: {e}") from None


def test_dockerfile_entrypoint_runs_the_cli() -> None:
    instr = dockerfile_instructions()
    (entry,) = [exec_form(i) for i in instr if i.startswith("ENTRYPOINT ")]
    assert entry == ["routeq"]
    # The console script the image's ENTRYPOINT names is the one build_parser() belongs to.
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["routeq"] == "worker.cli:main"


# --- environment ----------------------------------------------------------------------------------


def all_env() -> list[tuple[str, str, str]]:
    """(where, name, value) of every variable given to a routeq process."""
    out: list[tuple[str, str, str]] = []
    for name, svc in routeq_services().items():
        env = svc.get("environment") or {}
        assert isinstance(env, dict), f"compose {name}: use the mapping form of environment"
        out += [(f"compose:{name}", k, str(v)) for k, v in env.items()]
    out += [("configmap", k, str(v)) for k, v in configmap_data().items()]
    for c in routeq_containers():
        out += [(f"k8s:{c['name']}", e["name"], str(e.get("value", ""))) for e in c.get("env", [])]
    for s in k8s_kind("Secret"):
        out += [("secret", k, str(v)) for k, v in s.get("stringData", {}).items()]
    return out


def settings_value(settings: Settings, var: str) -> Any:
    """The Settings value a ``ROUTEQ_*`` variable sets; ``KeyError`` if it maps to no field."""
    obj: Any = settings
    for i, part in enumerate(var.removeprefix("ROUTEQ_").lower().split("__")):
        if isinstance(obj, dict):
            obj = obj[part]
        else:
            fields = type(obj).model_fields
            if part not in fields:
                raise KeyError(f"{var}: no field {part!r} (level {i})")
            obj = getattr(obj, part)
    return obj


def same_value(actual: Any, given: str) -> bool:
    if isinstance(actual, bool):
        return actual == (given.lower() in {"1", "true", "yes", "on"})
    if isinstance(actual, int | float):
        return float(actual) == float(given)
    return str(actual) == given


def test_settings_path_resolver_rejects_typos() -> None:
    s = Settings()
    with pytest.raises(KeyError):
        settings_value(s, "ROUTEQ_METRIC_PORT")
    with pytest.raises(KeyError):
        settings_value(s, "ROUTEQ_LIMITS__OPUS__CONCURENCY")


def test_every_env_var_is_known(monkeypatch: pytest.MonkeyPatch) -> None:
    env = all_env()
    assert any(n.startswith("ROUTEQ_") for _, n, _ in env)
    for where, name, value in env:
        if name.startswith("OTEL_"):
            assert name in KNOWN_OTEL_VARS, f"{where}: {name} is not an OpenTelemetry variable"
        elif not name.startswith("ROUTEQ_"):
            assert name in NON_PREFIXED_VARS, f"{where}: {name} is read by nothing"
            continue
        else:
            # Load Settings with just this variable: it must land in the field its name points at.
            for k in list(os.environ):
                if k.startswith("ROUTEQ_"):
                    monkeypatch.delenv(k)
            monkeypatch.setenv(name, value)
            actual = settings_value(Settings(_env_file=None), name)  # type: ignore[call-arg]
            assert same_value(actual, value), f"{where}: {name}={value!r} gave {actual!r}"


def test_every_documented_variable_is_a_setting() -> None:
    named = {
        v for doc in (README,) for v in re.findall(r"\bROUTEQ_[A-Z0-9_]*[A-Z0-9]\b(?!__|<)", doc.read_text())
    }
    assert "ROUTEQ_METRICS_PORT" in named
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    for var in sorted(named):
        settings_value(settings, var)  # KeyError names the variable that maps to no field


def test_no_real_secret_in_deploy_files() -> None:
    files = [p for p in DEPLOY.rglob("*") if p.is_file()] + [README]
    key_like = re.compile(r"sk-ant-(api|admin)\d\d-[A-Za-z0-9_-]{20,}")
    for p in files:
        assert not key_like.search(p.read_text(errors="replace")), f"{p}: looks like a real API key"
    (secret,) = k8s_kind("Secret")
    assert secret["stringData"]["ANTHROPIC_API_KEY"] == "REPLACE_ME"


# --- ports ----------------------------------------------------------------------------------------


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, f"{url}: give the port explicitly"
    return port


def ports_published(svc: dict[str, Any]) -> set[int]:
    return {int(str(p).split(":")[-1].split("/")[0]) for p in svc.get("ports", []) + svc.get("expose", [])}


def test_compose_ports_are_consistent() -> None:
    services = compose()["services"]
    jaeger = services["jaeger"]
    assert jaeger["image"].split(":")[0] == "jaegertracing/jaeger"  # Jaeger v2, not all-in-one (v1)
    assert {4317, 4318, 16686} <= ports_published(jaeger)

    mock = services["mock-api"]["command"]
    mock_port = int(mock[mock.index("--port") + 1])
    assert mock[mock.index("--host") + 1] == "0.0.0.0"
    assert mock_port in ports_published(services["mock-api"])

    for name, svc in routeq_services().items():
        env = svc.get("environment") or {}
        if "ANTHROPIC_BASE_URL" in env:
            url = re.sub(r"\$\{[A-Z_]+:-(.*)\}", r"\1", env["ANTHROPIC_BASE_URL"])
            assert urlsplit(url).hostname == "mock-api" and port_of(url) == mock_port, name
        if "OTEL_EXPORTER_OTLP_ENDPOINT" in env:
            url = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
            assert urlsplit(url).hostname == "jaeger", name
            assert OTLP_PORT_PROTOCOL[port_of(url)] == env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), name

    worker = services["worker"]
    metrics_port = int(worker["environment"]["ROUTEQ_METRICS_PORT"])
    assert metrics_port in ports_published(worker)
    assert "ports" not in worker, "a published host port breaks --scale worker=N"
    assert "container_name" not in worker, "a fixed name breaks --scale worker=N"


def test_compose_redis_is_durable() -> None:
    redis = compose()["services"]["redis"]
    cmd = redis["command"]
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(str(v).endswith(":/data") for v in redis["volumes"])


def test_k8s_metrics_port_and_probes_are_consistent() -> None:
    metrics_port = int(configmap_data()["ROUTEQ_METRICS_PORT"])
    (deploy,) = k8s_kind("Deployment")
    pod = deploy["spec"]["template"]
    (c,) = routeq_containers()
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert named["metrics"] == metrics_port
    assert int(pod["metadata"]["annotations"]["prometheus.io/port"]) == metrics_port

    def probe_port(probe: dict[str, Any]) -> int:
        port = probe["httpGet"]["port"]
        return named[port] if isinstance(port, str) else int(port)

    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probe_port(c["livenessProbe"]) == probe_port(c["readinessProbe"]) == metrics_port
    assert c["resources"]["requests"] and c["resources"]["limits"]

    (svc,) = k8s_kind("Service")
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (sp,) = svc["spec"]["ports"]
    target = sp["targetPort"]
    assert (named[target] if isinstance(target, str) else int(target)) == metrics_port

    otel = configmap_data()["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert OTLP_PORT_PROTOCOL[port_of(otel)] == configmap_data()["OTEL_EXPORTER_OTLP_PROTOCOL"]


def test_probe_paths_are_served() -> None:
    from prometheus_client import CollectorRegistry

    from worker.observe.metrics import Health, make_app

    health = Health()
    health.set_ready(True)
    app = make_app(CollectorRegistry(), health)
    (c,) = routeq_containers()
    for probe in ("livenessProbe", "readinessProbe"):
        statuses: list[str] = []
        app({"PATH_INFO": c[probe]["httpGet"]["path"]}, lambda s, h, out=statuses: out.append(s))
        assert statuses == ["200 OK"], probe


def test_grace_period_exceeds_drain_timeout() -> None:
    default_drain = Settings.model_fields["drain_timeout_s"].default
    drain = float(configmap_data().get("ROUTEQ_DRAIN_TIMEOUT_S", default_drain))
    (deploy,) = k8s_kind("Deployment")
    assert deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain
    worker = compose()["services"]["worker"]
    compose_drain = float(worker["environment"].get("ROUTEQ_DRAIN_TIMEOUT_S", default_drain))
    assert duration_s(worker["stop_grace_period"]) > compose_drain


def test_keda_scales_the_worker_on_the_queue_depth_metric() -> None:
    (so,) = k8s_kind("ScaledObject")
    (deploy,) = k8s_kind("Deployment")
    assert so["apiVersion"].startswith("keda.sh/")
    assert so["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    assert so["spec"]["minReplicaCount"] >= 1  # at zero no pod exports the metric to scale up from
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    assert re.search(rf"\b{QUEUE_DEPTH}\b", query)
    # Each pod reports the fleet-wide depth, so a plain sum over pods would count it once per pod.
    assert re.search(r"max\s+by\s*\(\s*queue\s*\)", query)
    assert float(trigger["metadata"]["threshold"]) > 0


def test_dockerfile() -> None:
    instr = dockerfile_instructions()
    assert instr[0] == "FROM python:3.12-slim"
    assert any(re.match(r"RUN pip install \.(\s|$)", ln) for ln in instr)
    users = [ln.split()[1] for ln in instr if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert 'ENTRYPOINT ["routeq"]' in instr
    (deploy,) = k8s_kind("Deployment")
    sc = deploy["spec"]["template"]["spec"]["securityContext"]
    assert sc["runAsNonRoot"] and str(sc["runAsUser"]) == users[-1].split(":")[0]


# --- the compose command lines, run ---------------------------------------------------------------

COMPOSE_DEFAULT = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` as `docker compose` resolves it with ``VAR`` unset."""
    return COMPOSE_DEFAULT.sub(lambda m: m.group(2) or "", value)


class Local:
    """Where each compose service's host:port is reachable here (only loopback addresses)."""

    def __init__(self, redis_url: str, otlp_endpoint: str) -> None:
        self.api_port = free_port()
        self.metrics_port = free_port()
        self.netloc = {
            "redis": urlsplit(redis_url).netloc,
            "jaeger": urlsplit(otlp_endpoint).netloc,
            "mock-api": f"127.0.0.1:{self.api_port}",
        }

    def url(self, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme and parts.hostname in self.netloc:
            return parts._replace(netloc=self.netloc[parts.hostname]).geturl()
        return value

    def env(self, svc: dict[str, Any]) -> dict[str, str]:
        """The service's environment as compose gives it, mapped to local addresses; nothing else of ours."""
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ROUTEQ_", "OTEL_", "ANTHROPIC_")) and k != "REDIS_URL"
        }
        for k, v in (svc.get("environment") or {}).items():
            base[k] = self.url(interpolate(str(v)))
        if "ROUTEQ_METRICS_PORT" in base:
            base["ROUTEQ_METRICS_PORT"] = str(self.metrics_port)  # 9464 may be taken on this machine
        return base


def volume_source(svc: dict[str, Any], target: str) -> Path:
    for v in svc.get("volumes", []):
        src, _, rest = interpolate(str(v)).partition(":")
        if rest.split(":")[0] == target:
            return (DEPLOY / src).resolve()  # relative paths are relative to the compose file
    raise AssertionError(f"no volume mounted at {target}")


async def status_of(redis_url: str, batch: str) -> dict[str, Any]:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    try:
        return await batch_status(redis, s.keys, batch)
    finally:
        await redis.aclose()


@pytest.mark.integration
def test_compose_commands_run_against_real_processes(redis_url: str, otlp_receiver: OtlpReceiver) -> None:
    services = compose()["services"]
    local = Local(redis_url, otlp_receiver.endpoint)
    # Like the image, the worker needs the shipped router model unless the learned router is turned off.
    worker_env = local.env(services["worker"])
    if worker_env.get("ROUTEQ_LEARNED_ROUTER", "true").lower() not in {"0", "false", "no", "off"}:
        assert (ROOT / "worker" / "policy" / "data" / "router_model.json").exists(), (
            "worker/policy/data/router_model.json is not shipped: the image's worker would exit at start "
            "(ROUTEQ_LEARNED_ROUTER defaults to true)"
        )

    # The stand-in, with its compose command line; bound to loopback here instead of 0.0.0.0.
    mock = [str(a) for a in services["mock-api"]["command"]]
    mock[mock.index("--host") + 1] = "127.0.0.1"
    mock[mock.index("--port") + 1] = str(local.api_port)
    check_argv(mock)
    api = Child(
        subprocess.Popen(routeq_cmd(*mock), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), "mock"
    )
    try:
        wait_port(local.api_port, proc=api.proc)

        # The one-shot producer, with its command line and its mounted corpus.
        producer = services["producer"]
        corpus = volume_source(producer, "/corpus")
        argv = [str(corpus) if a == "/corpus" else str(a) for a in producer["command"]]
        enq = check_argv(argv)
        docs = sorted(p for p in corpus.iterdir() if p.suffix in {".txt", ".md"})
        assert docs, f"{corpus}: the default CORPUS has no documents"
        p = subprocess.run(
            routeq_cmd(*argv), env=local.env(producer), capture_output=True, text=True, timeout=60
        )
        assert p.returncode == 0, p.stderr[-3000:]
        assert p.stdout.strip() == enq.batch

        # The worker, with its command line plus --burst so it exits once the queues are empty.
        argv = [*map(str, services["worker"]["command"]), "--burst"]
        check_argv(argv)
        w = subprocess.run(routeq_cmd(*argv), env=worker_env, capture_output=True, text=True, timeout=90)
        assert w.returncode == 0, w.stderr[-3000:]

        counts = asyncio.run(status_of(redis_url, enq.batch))
        assert counts["enqueued"] == counts["done"] == len(docs) and counts["pending"] == 0, counts
        assert api_stats(f"http://127.0.0.1:{local.api_port}")["models"], "the stand-in served no call"
        # Both compose services' OTEL settings reached the (local) collector under their service names.
        services_seen = {s["service"] for s in otlp_receiver.spans()}
        assert {"routeq-producer", "routeq-worker"} <= services_seen
    finally:
        api.stop()
