"""service/servicer.py's domain -> protobuf conversion."""
from __future__ import annotations

import numpy as np
import pytest

from service.proto.stt.v1 import stt_pb2
from service.servicer import _alternative
from service.session import Alignment, Transcript


@pytest.mark.parametrize("shape", [(0, 0), (1, 1), (37, 250), (200, 700)])
def test_alignment_weights_are_the_same_message_as_assigned_floats(shape):
    """The weights go into the message as packed bytes (fast on the event loop); the result must
    be byte-identical to assigning the floats."""
    weights = np.random.default_rng(1).random(shape, dtype=np.float32)
    tokens = tuple(f"t{i}" for i in range(shape[0]))
    got = _alternative(Transcript("a b", 0.5, (), Alignment(tokens, weights, 0.04, 1.5)))
    want = stt_pb2.SpeechRecognitionAlternative(transcript="a b", confidence=0.5)
    want.attention_alignment.CopyFrom(stt_pb2.AttentionAlignment(
        tokens=list(tokens), num_frames=shape[1], weights=weights.reshape(-1).tolist(),
        frame_shift={"nanos": 40_000_000}, offset={"seconds": 1, "nanos": 500_000_000}))
    assert got.SerializeToString() == want.SerializeToString()
    assert list(got.attention_alignment.weights) == weights.reshape(-1).tolist()
