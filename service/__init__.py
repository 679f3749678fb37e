"""Streaming speech-to-text service (gRPC)."""
