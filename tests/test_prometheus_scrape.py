"""A real Prometheus server scrapes the service's /metrics and answers queries.

Starts Debian's ``prometheus`` on a loopback port with a generated config that
scrapes one target every second and loads deploy/monitoring/stt-alerts.rules.yml,
then reads metrics back through the HTTP API (``/api/v1/query``, ``/api/v1/rules``).

The target is the real server (``python -m service --port P --metrics-port M``)
with the bundled model.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "monitoring" / "stt-alerts.rules.yml"
STARTUP_TIMEOUT_S = 60.0
QUERY_TIMEOUT_S = 30.0
MAX_STREAMS = 7  # an unusual value, so reading it back proves where it came from


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout_s: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


def stop(proc: subprocess.Popen) -> None:
    """Stop a process this test started (SIGTERM, then SIGKILL)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class Prometheus:
    """A throwaway Prometheus server on loopback scraping one target."""

    def __init__(self, tmp_path: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            message = "prometheus not found (Debian package prometheus, scripts/install_system_deps.sh)"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{
                "job_name": "stt",
                # namespace/pod as the Prometheus Operator would attach them,
                # so the rules' `by (namespace, pod)` behave as in a cluster.
                "static_configs": [{"targets": [target], "labels": {"namespace": "test", "pod": "stt-0"}}],
            }],
        }
        config_file = tmp_path / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.log = open(tmp_path / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config_file}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        wait_for_http(f"{self.url}/-/ready", STARTUP_TIMEOUT_S, self.proc)

    def api(self, path: str, **params: str) -> dict:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query_value(self, promql: str) -> float:
        """Poll an instant query until it returns one sample; its value."""
        deadline = time.monotonic() + QUERY_TIMEOUT_S
        while time.monotonic() < deadline:
            result = self.api("query", query=promql)["result"]
            if len(result) == 1:
                return float(result[0]["value"][1])
            assert len(result) <= 1, f"{promql}: {result}"
            time.sleep(0.5)
        raise AssertionError(f"no sample for {promql} within {QUERY_TIMEOUT_S} s")

    def rules_health(self) -> dict[str, str]:
        """Alert name -> health once every rule has been evaluated."""
        deadline = time.monotonic() + QUERY_TIMEOUT_S
        while time.monotonic() < deadline:
            rules = [r for g in self.api("rules")["groups"] for r in g["rules"]]
            if rules and all(r["health"] != "unknown" for r in rules):
                return {r["name"]: r["health"] for r in rules}
            time.sleep(0.5)
        raise AssertionError("rules were not evaluated in time")

    def close(self) -> None:
        stop(self.proc)
        self.log.close()


def alert_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"] for g in groups for r in g["rules"] if "alert" in r}


def check_common(prom: Prometheus) -> None:
    """What must hold for any target exposing the service's metrics."""
    assert prom.query_value('up{job="stt"}') == 1.0
    assert prom.query_value('stt_max_streams{job="stt"}') == MAX_STREAMS
    active = prom.query_value('stt_active_streams{job="stt"}')
    # the capacity alert's expression evaluates on the scraped series
    assert prom.query_value("stt_active_streams / stt_max_streams") == pytest.approx(active / MAX_STREAMS)
    health = prom.rules_health()
    assert set(health) == alert_names()
    assert set(health.values()) == {"ok"}, health


# --- the service test ------------------------------------------------------------------------


def test_prometheus_scrapes_real_server(tmp_path: Path) -> None:
    grpc_port, metrics_port = free_port(), free_port()
    env = {**os.environ, "STT_MAX_STREAMS": str(MAX_STREAMS), "STT_HOST": "127.0.0.1", "STT_LOG_LEVEL": "WARNING"}
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(grpc_port), "--metrics-port", str(metrics_port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    prom = None
    try:
        wait_for_http(f"http://127.0.0.1:{metrics_port}/metrics", STARTUP_TIMEOUT_S, server)
        prom = Prometheus(tmp_path, f"127.0.0.1:{metrics_port}")
        check_common(prom)
        assert prom.query_value('stt_active_streams{job="stt"}') == 0.0
    finally:
        if prom is not None:
            prom.close()
        stop(server)
        log.close()
