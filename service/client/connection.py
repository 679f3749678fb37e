"""gRPC channel and call metadata for stt-client: plaintext, TLS, mutual TLS, bearer token."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

TOKEN_ENV = "STT_AUTH_TOKEN"
# Recognize requests are refused above the server's STT_MAX_MESSAGE_BYTES (4 MiB by default);
# responses with attention alignments of long files can be large.
MAX_RECEIVE_BYTES = 64 * 1024 * 1024
# Spread calls over every address the target resolves to (a headless Service), and
# reconnect quickly after a server restart instead of gRPC's default 1 s .. 120 s backoff.
SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
CHANNEL_OPTIONS = (
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


class ClientSetupError(Exception):
    """Bad connection options (unreadable certificate, key without certificate...)."""


@dataclass(frozen=True)
class Connection:
    """Where and how to connect; built from the common command-line options."""

    server: str = "localhost:50051"
    tls: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    token: str | None = None

    @property
    def secure(self) -> bool:
        return self.tls or self.ca is not None or self.cert is not None

    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        return (("authorization", f"Bearer {self.token}"),) if self.token else None

    def channel(self) -> grpc.Channel:
        if not self.secure:
            return grpc.insecure_channel(self.server, options=CHANNEL_OPTIONS)
        if (self.cert is None) != (self.key is None):
            raise ClientSetupError("--cert and --key go together (mutual TLS)")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "--ca"),  # None: the system's trusted roots
            private_key=_read(self.key, "--key"),
            certificate_chain=_read(self.cert, "--cert"),
        )
        return grpc.secure_channel(self.server, credentials, options=CHANNEL_OPTIONS)


def _read(path: Path | None, flag: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as err:
        raise ClientSetupError(f"cannot read {flag} {path}: {err.strerror}") from None


def token_from(flag_value: str | None) -> str | None:
    """--token wins over the STT_AUTH_TOKEN environment variable."""
    return flag_value or os.environ.get(TOKEN_ENV) or None
