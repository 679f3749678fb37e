"""service/config.py: STT_* environment, CLI flags of the same names, readable errors."""
from __future__ import annotations

import pytest

from service.config import BUNDLED_MODEL_DIR, SettingsError, load_settings


def test_defaults_match_architecture(monkeypatch):
    for name in ("STT_PORT", "STT_METRICS_PORT", "STT_MODEL_DIR", "STT_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings([])
    assert (s.port, s.metrics_port, s.host) == (50051, 9090, "0.0.0.0")
    assert (s.max_streams, s.max_stream_seconds, s.idle_timeout_seconds) == (200, 3600, 10)
    assert (s.max_message_bytes, s.drain_grace_seconds, s.inference_threads) == (4194304, 30, 2)
    assert (s.batch_max_size, s.batch_max_wait_ms, s.log_level, s.log_format) == (64, 0, "INFO", "json")
    assert s.model_dir == BUNDLED_MODEL_DIR and s.auth_token is None and not s.tls_enabled


def test_environment_and_flags(monkeypatch):
    monkeypatch.setenv("STT_PORT", "6000")
    monkeypatch.setenv("STT_METRICS_PORT", "6001")
    monkeypatch.setenv("STT_LOG_LEVEL", "debug")
    monkeypatch.setenv("STT_AUTH_TOKEN", "s3cr3t")
    s = load_settings(["--metrics-port", "7001", "--max-streams", "5"])
    assert (s.port, s.metrics_port, s.max_streams, s.log_level) == (6000, 7001, 5, "DEBUG")
    assert s.auth_token.get_secret_value() == "s3cr3t" and "s3cr3t" not in repr(s)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--port", "70000"], "STT_PORT"),
        (["--max-streams", "0"], "STT_MAX_STREAMS"),
        (["--beam-threshold", "-1"], "STT_BEAM_THRESHOLD"),
        (["--log-format", "xml"], "STT_LOG_FORMAT"),
        (["--drain-grace-seconds", "inf"], "STT_DRAIN_GRACE_SECONDS"),
        (["--max-stream-seconds", "nan"], "STT_MAX_STREAM_SECONDS"),
        (["--idle-timeout-seconds", "1e9"], "STT_IDLE_TIMEOUT_SECONDS"),
        (["--port", "9000", "--metrics-port", "9000"], "must differ"),
        (["--tls-client-ca-file", "/etc/hostname"], "mTLS"),
    ],
)
def test_invalid_values_name_the_setting(argv, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(argv)
