"""Server settings: environment variables ``STT_*`` and command-line flags of the same names.

``STT_METRICS_PORT=9091`` and ``--metrics-port 9091`` set the same field; flags win
over the environment. Every value is validated at start-up with a message that
names the setting, so a bad deployment fails fast instead of at the first request.
"""
from __future__ import annotations

import pathlib
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict

from service.pipeline.ctc_prefix import DEFAULT_CTC_WEIGHT
from service.pipeline.lm import DEFAULT_LM_WEIGHT
from service.pipeline.decoder import DEFAULT_BEAM_SIZE, DEFAULT_BEAM_THRESHOLD

# The trained model shipped inside the package (see service/models/default/MODEL_CARD.md).
BUNDLED_MODEL_DIR = pathlib.Path(__file__).resolve().parent / "models" / "default"


class Settings(BaseSettings):
    """Every server setting; read-only after start-up."""

    model_config = SettingsConfigDict(
        env_prefix="STT_",
        frozen=True,
        extra="ignore",
        cli_kebab_case=True,
        cli_prog_name="stt-server",
        cli_implicit_flags=False,
        allow_inf_nan=False,  # "inf" seconds would pass ge=0 and break timers (join(inf) overflows)
    )

    # Network.
    host: str = Field("0.0.0.0", description="address the gRPC server binds")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port (0: any free port)")
    metrics_port: int = Field(9090, ge=0, le=65535, description="Prometheus /metrics HTTP port (0: any free port)")

    # Processes.
    workers: int = Field(1, ge=1, le=64,
                         description="server processes sharing the port (SO_REUSEPORT); about one per CPU core")

    # Model and inference.
    model_dir: pathlib.Path = Field(BUNDLED_MODEL_DIR, description="folder with encoder.onnx, decoder.onnx and tokenizer")
    precision: Literal["fp32", "int8"] = Field(
        "fp32", description="graphs to serve: fp32, or int8 (the model folder's int8/ twins: about 0.65x the model "
                            "CPU at light load, about 0.5 points more WER on most dev sets of the bundled model; "
                            "see its MODEL_CARD.md)")
    inference_threads: int = Field(2, ge=1, le=256, description="ONNX Runtime worker threads")
    batch_max_size: int = Field(64, ge=1, le=4096, description="most streams stacked into one ONNX call")
    # 0: natural batching only (requests that queued while the inference threads were busy);
    # measured: a 5 ms wait added 15 ms to p50 partial latency and saved no CPU (docs/BENCHMARKS.md).
    batch_max_wait_ms: float = Field(0.0, ge=0.0, le=1000.0, description="longest wait to fill a batch, in ms")
    ctc_weight: float = Field(DEFAULT_CTC_WEIGHT, ge=0.0, le=1.0,
                              description="joint CTC/attention decoding: weight of the CTC prefix score (0: attention only)")
    lm_weight: float = Field(DEFAULT_LM_WEIGHT, ge=0.0, le=2.0,
                             description="language model weight (shallow fusion) when the model folder has an lm.onnx; 0: off")
    beam_size: int = Field(DEFAULT_BEAM_SIZE, ge=1, le=16,
                           description="decoder beam width for requests that leave beam_size at 0 (1: greedy)")
    beam_threshold: float = Field(DEFAULT_BEAM_THRESHOLD, ge=0.0, le=1000.0,
                                  description="beam pruning: drop hypotheses this far (log-prob) below the best; 0: off")

    # Limits.
    max_streams: int = Field(200, ge=1, description="concurrent recognition RPCs; more get RESOURCE_EXHAUSTED")
    max_stream_seconds: float = Field(3600.0, gt=0, le=86400.0, description="longest stream (audio or wall time); then OUT_OF_RANGE")
    idle_timeout_seconds: float = Field(10.0, gt=0, le=86400.0, description="longest wait for the next audio message; then OUT_OF_RANGE")
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024, le=2**31 - 1, description="largest request message")
    drain_grace_seconds: float = Field(30.0, ge=0, le=3600.0, description="on SIGTERM, time in-flight streams get to finish")

    # Security.
    tls_cert_file: pathlib.Path | None = Field(None, description="PEM server certificate (enables TLS)")
    tls_key_file: pathlib.Path | None = Field(None, description="PEM private key of tls_cert_file")
    tls_client_ca_file: pathlib.Path | None = Field(None, description="PEM CA bundle: require client certificates (mTLS)")
    auth_token: SecretStr | None = Field(None, description="require 'authorization: Bearer <token>' metadata")

    # Logging.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    log_format: Literal["json", "text"] = Field("json", description="one JSON object per line, or plain text")

    @field_validator("log_level", "log_format", "precision", mode="before")
    @classmethod
    def _normalise_case(cls, value: object, info) -> object:
        if isinstance(value, str):
            return value.upper() if info.field_name == "log_level" else value.lower()
        return value

    @field_validator("tls_cert_file", "tls_key_file", "tls_client_ca_file", "auth_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # STT_TLS_CERT_FILE= (empty) in a deployment manifest means "not set".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("tls_cert_file", "tls_key_file", "tls_client_ca_file")
    @classmethod
    def _file_exists(cls, value: pathlib.Path | None, info) -> pathlib.Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"STT_{info.field_name.upper()}: no such file: {value}")
        return value

    @model_validator(mode="after")
    def _tls_consistent(self) -> "Settings":
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("STT_TLS_CERT_FILE and STT_TLS_KEY_FILE must be set together (or neither)")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("STT_TLS_CLIENT_CA_FILE (mTLS) needs STT_TLS_CERT_FILE and STT_TLS_KEY_FILE")
        if self.metrics_port and self.metrics_port == self.port:
            raise ValueError(f"STT_PORT and STT_METRICS_PORT must differ (both {self.port})")
        return self

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None


class SettingsError(Exception):
    """Settings failed validation; the message lists every problem, one per line."""


def describe_validation_error(err: ValidationError) -> str:
    """One line per problem, naming the environment variable, e.g. 'STT_PORT: ...'."""
    lines = []
    for problem in err.errors():
        field = ".".join(str(part) for part in problem["loc"])
        name = f"STT_{field.upper()}" if field else "settings"
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{name}: {message}" if not message.startswith("STT_") else message)
    return "\n".join(lines)


def load_settings(argv: list[str] | None = None) -> Settings:
    """Settings from the environment, overridden by command-line flags (``--metrics-port 9091``).

    Raises SettingsError with a readable message on invalid values.
    """
    try:
        return CliApp.run(Settings, cli_args=list(argv) if argv is not None else [])
    except ValidationError as err:
        raise SettingsError(describe_validation_error(err)) from None
