"""Shallow fusion with a token language model: lm.onnx beside the acoustic model (optional).

The LM (trained on text alone by model_export/lm.py) gives log P(next token | tokens so
far) over the acoustic model's own vocabulary. The decoder runs one LM step per decoding
step, batched over the beam like the decoder graph, and adds `lm_weight` times the LM
log-prob to every candidate's score (service/pipeline/decoder.py). The LM sees tokens
only, never frames, so it cannot break streaming == offline decoding.

A model folder without lm.onnx decodes without it; an lm.onnx whose vocabulary differs
from the acoustic model's is refused at start-up (its ids would mean other pieces).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LM_FILE = "lm.onnx"
# Service default when a model folder has an lm.onnx. With v1.9.0 and the bundled LM v1.0.0 at beam 8, weights
# 0 / 0.1 / 0.15 / 0.2 gave dev WER 26.5 / 22.9 / 23.6 / 23.5 % conversational and 56.7 / 54.5 / 54.0 /
# 54.6 % prose, prose CER rising from 0.1 on; LM v1.1.0 at 0.1 / 0.15 / 0.2: 23.2 / 23.4 / 23.7 % and
# 53.7 / 53.6 / 53.3 %, prose CER 30.4 / 31.1 / 31.8 % (docs/BENCHMARKS.md, "Language model weight"); v1.11.0 with
# LM v1.2.0 at 0.1 / 0.15 / 0.2: 24.6 / 24.5 / 25.2 % conversational (CER 16.1 / 16.6 / 17.3 %), prose 55.1 / 55.1 % at 0.1 / 0.15.
DEFAULT_LM_WEIGHT = 0.1
# A decoder-step request with the LM also carries the LM's state for the same rows under these names (its
# token is the decoder's): one call runs both steps (service/pipeline/decoder.py, run_step).
LM_H_IN, LM_C_IN = "lm_h_in", "lm_c_in"


@dataclass(frozen=True)
class LmInfo:
    version: str
    hidden: int  # LSTM state size per hypothesis


class LmGraph:
    """Shared wrapper around the lm.onnx session: inputs token (K,), h, c (K, H)."""

    OUTPUTS = ("lm_logp", "lm_h", "lm_c")

    def __init__(self, session, vocab: tuple[str, ...]) -> None:
        from service.pipeline.model_info import ModelFileError  # onnxruntime: not for the configuration's import

        meta = session.get_modelmeta().custom_metadata_map
        try:
            lm_vocab = tuple(json.loads(meta["stt.lm_vocab"]))
            self.info = LmInfo(meta["stt.lm_version"], int(meta["stt.lm_hidden"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelFileError(f"{LM_FILE} metadata incomplete or invalid: {exc!r}") from exc
        if lm_vocab != tuple(vocab):
            raise ModelFileError(f"{LM_FILE} was trained on another vocabulary ({len(lm_vocab)} pieces) than the "
                                 f"acoustic model ({len(vocab)} pieces): retrain it with the model's BPE")
        self.session = session

    @classmethod
    def load(cls, model_dir: Path, vocab: tuple[str, ...], threads: int = 1) -> "LmGraph | None":
        """The LM of a model folder, or None when it has none."""
        from service.pipeline.model_info import create_session  # onnxruntime: not for the configuration's import

        path = Path(model_dir) / LM_FILE
        return cls(create_session(path, threads), vocab) if path.is_file() else None

    def zero_state(self) -> np.ndarray:
        return np.zeros(self.info.hidden, np.float32)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.OUTPUTS, self.session.run(["logp", "new_h", "new_c"], inputs)))
