"""Corpus synthesis, model definition, training, ONNX export (needs the [train] extra)."""
