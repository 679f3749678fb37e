"""Command-line client (stt-client) over the public gRPC API only."""
