"""The shared, read-only Recognizer: ONNX sessions, model metadata, tokenizer, batchers.

Built once at start-up. Per-segment state lives in SegmentRecognizer objects it hands
out (`new_segment`); nothing here changes after `start()` except the batch queues.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from service import metrics
from service.pipeline.assembly import Assembler
from service.pipeline.batcher import MicroBatcher
from service.pipeline.ctc_prefix import DEFAULT_CTC_WEIGHT
from service.pipeline.decoder import (DEFAULT_BEAM_SIZE, DEFAULT_BEAM_THRESHOLD, DecodeOptions, DecoderGraph,
                                      run_step)
from service.pipeline.encoder import EncoderGraph
from service.pipeline.lm import DEFAULT_LM_WEIGHT, LM_C_IN, LM_H_IN, LmGraph
from service.pipeline.model_info import ModelFileError, ModelInfo, create_session
from service.pipeline.recognition import SegmentRecognizer
from service.pipeline.tokenizer import Tokenizer

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).parent / "models" / "default"
PRECISIONS = ("fp32", "int8")
# A model folder's int8 twins of encoder.onnx and decoder.onnx (model_export.export --int8-out); the LM
# (lm.onnx) stays fp32 in the folder itself. Their activations are quantized per call with one scale for the
# whole input, so rows stacked from several streams share it: a stream's int8 result can change slightly with
# the traffic (4 of 48 dev transcripts did). Running them one stream per call removed that but cost capacity
# (p95 partial latency at 100 streams 1.2 s against 0.3-0.8 s stacked: MODEL_NOTES.md, session 23), so they stack.
INT8_SUBDIR = "int8"
DECODER_BATCH_AXES = {k: 0 for k in ("token", "h", "c", "att_prev", "enc", "keys", "mask",
                                     "logp", "new_h", "new_c", "att",
                                     LM_H_IN, LM_C_IN, "lm_logp", "lm_h", "lm_c")}


class Recognizer:
    def __init__(self, model_dir: Path = DEFAULT_MODEL_DIR, *, inference_threads: int = 2,
                 batch_max_size: int = 64, batch_max_wait_ms: float = 0.0, chunk_frames: int = 16,
                 ctc_weight: float = DEFAULT_CTC_WEIGHT, beam_size: int = DEFAULT_BEAM_SIZE,
                 beam_threshold: float = DEFAULT_BEAM_THRESHOLD, lm_weight: float = DEFAULT_LM_WEIGHT,
                 precision: str = "fp32") -> None:
        model_dir = Path(model_dir)
        graphs = graph_dir(model_dir, precision)
        enc_session = create_session(graphs / "encoder.onnx")
        dec_session = create_session(graphs / "decoder.onnx")
        self.info = ModelInfo.from_session(enc_session)
        if ModelInfo.from_session(dec_session).version != self.info.version:
            raise ModelFileError(f"encoder and decoder in {graphs} come from different model versions")
        self.model_dir = model_dir
        self.precision = precision
        self.chunk_frames = chunk_frames  # feature frames per encoder call (10 ms each)
        self.ctc_weight = ctc_weight  # joint CTC/attention decoding weight for requests that leave it unset
        self.beam_size = beam_size  # beam width for requests that leave it unset
        self.beam_threshold = beam_threshold  # score pruning (log-prob below the best; 0: off)
        self.tokenizer = Tokenizer(self.info.vocab)
        self.encoder = EncoderGraph(enc_session, self.info)
        self.decoder = DecoderGraph(dec_session)
        # the LM (lm.onnx, optional) is loaded only when it will be used
        self.lm = LmGraph.load(model_dir, self.info.vocab) if lm_weight > 0 else None
        self.lm_weight = lm_weight if self.lm is not None else 0.0  # for requests that leave it unset
        self.assembler = Assembler(self.info, self.tokenizer)
        self._executor = ThreadPoolExecutor(inference_threads, thread_name_prefix="onnx")
        wait_s = batch_max_wait_ms / 1000
        self.encoder_batcher = MicroBatcher("encoder", self.encoder.run, self.encoder.batch_axes(), self._executor,
                                            inference_threads, batch_max_size, wait_s, metrics.ENCODER_BATCH_SIZE)
        # one call per step runs the decoder graph and, when the LM fuses, the LM step for the same rows
        self.decoder_batcher = MicroBatcher("decoder", functools.partial(run_step, self.decoder, self.lm),
                                            DECODER_BATCH_AXES, self._executor, inference_threads, batch_max_size,
                                            wait_s, metrics.DECODER_BATCH_SIZE)
        log.info("model loaded", extra={"model_dir": str(model_dir), "version": self.info.version,
                                        "precision": precision, "graphs": str(graphs),
                                        "window": [self.info.window_back, self.info.window_size],
                                        "lm": self.lm.info.version if self.lm is not None else None})

    @classmethod
    def load(cls, model_dir: Path | None = None, **kwargs) -> "Recognizer":
        return cls(model_dir or DEFAULT_MODEL_DIR, **kwargs)

    async def start(self) -> None:
        """Start the micro-batching workers (call from the serving event loop)."""
        self.encoder_batcher.start()
        self.decoder_batcher.start()

    async def close(self) -> None:
        await self.encoder_batcher.close()
        await self.decoder_batcher.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def new_segment(self, offset_s: float, options: DecodeOptions = DecodeOptions()) -> SegmentRecognizer:
        if options.ctc_weight is None:
            options = dataclasses.replace(options, ctc_weight=self.ctc_weight)
        if options.beam_size is None:
            options = dataclasses.replace(options, beam_size=max(self.beam_size, options.min_beam_size))
        if options.beam_threshold is None:
            options = dataclasses.replace(options, beam_threshold=self.beam_threshold)
        if options.lm_weight is None:
            options = dataclasses.replace(options, lm_weight=self.lm_weight)
        return SegmentRecognizer(self, offset_s, options)


def graph_dir(model_dir: Path, precision: str) -> Path:
    """The folder of the encoder.onnx and decoder.onnx that serve `precision` ("fp32" or "int8")."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "fp32":
        return model_dir
    graphs = model_dir / INT8_SUBDIR
    if not all((graphs / name).is_file() for name in ("encoder.onnx", "decoder.onnx")):
        raise ModelFileError(f"precision int8 needs {graphs}/encoder.onnx and decoder.onnx, and {model_dir} has no "
                             f"such folder: write it with `python -m model_export.export ... --int8-out {graphs} "
                             "--int8-reduce-range`, or serve fp32")
    return graphs

