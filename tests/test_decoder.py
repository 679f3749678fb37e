"""Monotonic windowed attention decoding: streaming under any chunking equals offline decoding."""
from __future__ import annotations

import numpy as np
import pytest

from service.config import BUNDLED_MODEL_DIR
from service.pipeline.decoder import (DecodeOptions, DecoderGraph, Hyp, WindowedDecoder, alignment_matrix,
                                      decode_offline, shift_window)
from service.pipeline.encoder import EncoderGraph, FeatureChunker, FrameStore, encode_offline
from service.pipeline.features import FeatureExtractor
from service.pipeline.model_info import ModelInfo, create_session
from service.pipeline.tokenizer import Tokenizer
from tests.speech_audio import silence, synthesize


@pytest.fixture(scope="module")
def graphs(tiny_model_dir):
    enc_sess = create_session(tiny_model_dir / "encoder.onnx")
    info = ModelInfo.from_session(enc_sess)
    return info, EncoderGraph(enc_sess, info), DecoderGraph(create_session(tiny_model_dir / "decoder.onnx"))


def _encode(enc: EncoderGraph, state, chunk, store: FrameStore):
    out, state = enc.split(enc.run(enc.inputs(chunk, state)))
    store.append(out)
    return state


def offline(info, enc, dec, audio, options):
    store = encode_offline(enc, audio)
    return decode_offline(dec, info, store, options), store


def streaming(info, enc, dec, audio, options, rng):
    fe, chunker, store, state = FeatureExtractor(info.features), FeatureChunker(info), FrameStore(info), enc.zero_state()
    decoder = WindowedDecoder(info, options)
    pos, steps_before_end = 0, 0
    decoder.held_before_end = False  # test bookkeeping: did a step wait for the segment end?
    while pos < len(audio):
        n = int(rng.integers(1, 4000))
        for chunk in chunker.push(fe.process(audio[pos:pos + n])):
            state = _encode(enc, state, chunk, store)
        pos += n
        while (req := decoder.next_step(store, ended=False)) is not None:
            decoder.apply(req, dec.run(req.inputs))
            steps_before_end += 1
        decoder.held_before_end |= decoder.holding_end
    decoder.tokens_before_end = len(decoder.partial().tokens)  # what the partials had shown
    tail = chunker.push(fe.flush()) + [c for c in [chunker.flush()] if c is not None]
    for chunk in tail:
        state = _encode(enc, state, chunk, store)
    while (req := decoder.next_step(store, ended=True)) is not None:
        decoder.apply(req, dec.run(req.inputs))
    return decoder, store, steps_before_end


@pytest.mark.parametrize("beam,ctc_weight", [(1, 0.0), (3, 0.0), (1, 0.5), (3, 0.3)])
def test_streaming_equals_offline_under_random_chunking(graphs, beam, ctc_weight):
    info, enc, dec = graphs
    audio = synthesize("the quick brown fox jumps over the lazy dog")
    options = DecodeOptions(beam_size=beam, ctc_weight=ctc_weight)
    ref, ref_store = offline(info, enc, dec, audio, options)
    ref_best = ref.nbest()[0]
    assert ref_best.tokens, "decoder produced nothing: the test would prove nothing"
    for seed in range(3):
        got, store, early_steps = streaming(info, enc, dec, audio, options, np.random.default_rng(seed))
        best = got.nbest()[0]
        assert best.tokens == ref_best.tokens
        np.testing.assert_array_equal(alignment_matrix(best, store.length, ref.eos),
                                      alignment_matrix(ref_best, ref_store.length, ref.eos))
        assert [h.tokens for h in got.nbest()] == [h.tokens for h in ref.nbest()]
        assert early_steps > 0, "no step ran before the end: decoding did not stream"


@pytest.fixture(scope="module")
def bundled_graphs():
    if not (BUNDLED_MODEL_DIR / "encoder.onnx").is_file():
        pytest.skip("no bundled model")
    enc_sess = create_session(BUNDLED_MODEL_DIR / "encoder.onnx")
    info = ModelInfo.from_session(enc_sess)
    return info, EncoderGraph(enc_sess, info), DecoderGraph(create_session(BUNDLED_MODEL_DIR / "decoder.onnx"))


@pytest.mark.parametrize("beam", [1, 4])
def test_an_end_proposed_in_a_pause_waits_until_speech_follows(bundled_graphs, beam):
    """Two sentences in one segment: the trained decoder proposes the end in the pause after the
    first. The window cannot tell whether speech follows, so that step waits: until CTC hears the
    next speech, which rejects the end, the window jumps there and the second sentence is decoded
    before the segment ends (partials keep flowing); streaming still equals offline."""
    info, enc, dec = bundled_graphs
    first, second = synthesize("what time is it"), synthesize("turn on the lights")
    audio = np.concatenate([silence(0.3), first, silence(0.6), second, silence(0.3)])
    second_s = (0.3 + (len(first) + 0.6 * 16000) / 16000, 0.3 + (len(first) + len(second)) / 16000 + 0.6)
    options = DecodeOptions(beam_size=beam, ctc_weight=0.3)
    ref, ref_store = offline(info, enc, dec, audio, options)
    best = ref.nbest()[0]
    text = Tokenizer(info.vocab).decode(best.content_tokens(ref.eos))
    # Where each token listened (its attention peak): the second sentence must have its own tokens,
    # whatever words this model makes of them; an end accepted in the pause leaves it none.
    peaks_s = alignment_matrix(best, ref_store.length, ref.eos).argmax(axis=1) * info.frame_shift_s
    in_second = int(np.sum((peaks_s >= second_s[0] - 0.1) & (peaks_s <= second_s[1] + 0.1)))
    assert "time" in text.split() and in_second >= 3, (text, peaks_s, second_s)
    in_first = int(np.sum(peaks_s < second_s[0] - 0.1))
    for seed in range(2):
        got, _, early_steps = streaming(info, enc, dec, audio, options, np.random.default_rng(seed))
        assert got.held_before_end, "no end decision waited: the test proves nothing"
        assert early_steps > 0
        # the second sentence's tokens came before the segment end (holding to the end gave none)
        assert got.tokens_before_end >= in_first + 2, (got.tokens_before_end, in_first, in_second)
        assert got.nbest()[0].tokens == ref.nbest()[0].tokens


@pytest.mark.parametrize("beam", [1, 4])
def test_a_segment_cut_mid_speech_ends_instead_of_babbling(bundled_graphs, beam):
    """A segment that ends mid-sentence (length limit, forced end, stream end): the attention still
    expects words, so its end probability ranks far below its top tokens. CTC, over the whole
    segment, knows the output is complete: the end must be scored where the window reaches the
    segment end, or the decoder repeats tokens until its budget (measured before the fix: 'with her
    hair he have have her have her ...', 43 words for a 3.1 s cut of a 15-word sentence)."""
    info, enc, dec = bundled_graphs
    sentence = "please call stella and ask her to bring these things with her from the store"
    audio = np.concatenate([silence(0.5), synthesize(sentence)[: int(3.1 * 16000)]])
    options = DecodeOptions(beam_size=beam, ctc_weight=0.3)
    ref, _ = offline(info, enc, dec, audio, options)
    words = Tokenizer(info.vocab).decode(ref.nbest()[0].content_tokens(ref.eos)).split()
    assert 3 <= len(words) <= len(sentence.split()), words
    for seed in range(2):
        got, _, _ = streaming(info, enc, dec, audio, options, np.random.default_rng(seed))
        assert got.nbest()[0].tokens == ref.nbest()[0].tokens


def test_beam_threshold_prunes_only_hypotheses_below_the_floor(bundled_graphs):
    """Score pruning on the trained model: after every step each surviving hypothesis is within
    the threshold of the step's best, pruning does leave the beam short somewhere (else the test
    proves nothing), a threshold too wide to bite equals no pruning, and streaming under random
    chunkings still equals offline decoding."""
    info, enc, dec = bundled_graphs
    audio = np.concatenate([synthesize("please call me back tomorrow morning"), silence(0.3)])
    store = encode_offline(enc, audio)
    threshold, beam = 2.0, 4
    options = DecodeOptions(beam_size=beam, ctc_weight=0.3, beam_threshold=threshold)
    decoder, short_steps = WindowedDecoder(info, options), 0
    while (req := decoder.next_step(store, ended=True)) is not None:
        finished_before = len(decoder.finished)
        decoder.apply(req, dec.run(req.inputs))
        step = [h.score for h in decoder.active + decoder.finished[finished_before:]]
        if step:
            assert min(step) >= max(step) - threshold - 1e-9
            short_steps += len(step) < beam
    assert short_steps > 0, "the threshold never pruned: the test proves nothing"
    assert decoder.nbest()[0].tokens

    def nbest(opts):
        return [(h.tokens, round(h.score, 6)) for h in decode_offline(dec, info, store, opts).nbest()]
    assert nbest(DecodeOptions(beam_size=beam, ctc_weight=0.3, beam_threshold=1e6)) == \
        nbest(DecodeOptions(beam_size=beam, ctc_weight=0.3, beam_threshold=0.0))
    for seed in range(2):
        got, _, early_steps = streaming(info, enc, dec, audio, options, np.random.default_rng(seed))
        assert early_steps > 0
        assert [h.tokens for h in got.nbest()] == [h.tokens for h in decoder.nbest()]


def test_window_only_moves_forward_and_respects_bounds(graphs):
    info, enc, dec = graphs
    audio = synthesize("one two three four five six seven")
    result, store = offline(info, enc, dec, audio, DecodeOptions())
    best = result.nbest()[0]
    starts = [s for s, _ in best.align]
    assert starts == sorted(starts)
    assert starts[0] == -info.window_back
    for start, weights in best.align:
        assert len(weights) == info.window_size
        # Frames outside the encoded segment get no attention.
        idx = np.arange(start, start + info.window_size)
        assert np.all(weights[(idx < 0) | (idx >= store.length)] < 1e-6)


def test_no_step_runs_before_its_window_is_encoded(graphs):
    info, enc, dec = graphs
    store = FrameStore(info)
    decoder = WindowedDecoder(info)
    assert decoder.next_step(store, ended=False) is None  # nothing encoded yet
    fe, chunker, state = FeatureExtractor(info.features), FeatureChunker(info), enc.zero_state()
    audio = synthesize("hello")
    for chunk in chunker.push(fe.process(audio)):
        state = _encode(enc, state, chunk, store)
        req = decoder.next_step(store, ended=False)
        needed = -info.window_back + info.window_size
        assert (req is not None) == (store.length >= needed) or decoder.active[0].tokens
        if req is not None:
            break


def _ctc_log_likelihood(logp: np.ndarray, labels: list[int], blank: int) -> float:
    """log P(labels | frames): the textbook CTC forward algorithm over the blank-extended labels."""
    ext = [blank]
    for lab in labels:
        ext += [lab, blank]
    alpha = np.full(len(ext), -np.inf)
    alpha[0] = logp[0, blank]
    if len(ext) > 1:
        alpha[1] = logp[0, ext[1]]
    for t in range(1, len(logp)):
        prev = alpha.copy()
        for s in range(len(ext)):
            terms = [prev[s]] + ([prev[s - 1]] if s >= 1 else [])
            if s >= 2 and ext[s] != blank and ext[s] != ext[s - 2]:
                terms.append(prev[s - 2])
            alpha[s] = np.logaddexp.reduce(terms) + logp[t, ext[s]]
    return float(np.logaddexp(alpha[-1], alpha[-2]) if len(ext) > 1 else alpha[-1])


@pytest.mark.parametrize("beam", [1, 2])
def test_joint_score_is_weighted_attention_plus_ctc_likelihood(graphs, beam):
    """A segment shorter than one window: every window reaches past the segment end, so each
    step's CTC term is exact and those of a finished hypothesis add up to log P_ctc(tokens | segment)."""
    info, enc, dec = graphs
    audio = synthesize("hi")[:6000]
    store = encode_offline(enc, audio)
    assert store.length < info.window_size - info.window_back
    weight = 0.4
    result = decode_offline(dec, info, store, DecodeOptions(beam_size=beam, ctc_weight=weight, ctc_candidates=20))
    best = result.nbest()[0]
    assert best.finished and best.tokens[-1] == result.eos
    content = best.tokens[:-1]
    ctc = _ctc_log_likelihood(store.ctc_logp().astype(np.float64), content, result.blank)
    assert best.score == pytest.approx((1 - weight) * sum(best.logps) + weight * ctc, abs=1e-3)
    plain = decode_offline(dec, info, store, DecodeOptions(beam_size=beam)).nbest()[0]
    assert plain.score == pytest.approx(sum(plain.logps), abs=1e-4)


def test_token_budget_stops_runaway_decoding(graphs):
    info, enc, dec = graphs
    audio = synthesize("hi")
    result, store = offline(info, enc, dec, audio, DecodeOptions(max_tokens_per_frame=0.1, token_budget_slack=2))
    assert len(result.nbest()[0].tokens) <= int(0.1 * store.length) + 2 + 1


def test_shift_window():
    att = np.arange(1, 6, dtype=np.float32)
    np.testing.assert_array_equal(shift_window(att, 2), [3, 4, 5, 0, 0])
    np.testing.assert_array_equal(shift_window(att, 0), att)
    np.testing.assert_array_equal(shift_window(att, 7), np.zeros(5))


@pytest.mark.parametrize("request_beam,alternatives,server_beam,expected", [
    (0, 1, 4, 4),  # unset: the server's STT_BEAM_SIZE
    (0, 6, 4, 6),  # unset, more alternatives wanted than the server beam: widened
    (2, 1, 4, 2),  # the request's own beam wins
    (0, 1, 1, 1),  # a greedy server
])
def test_beam_width_comes_from_the_request_or_the_server_default(tiny_model_dir, request_beam, alternatives,
                                                                 server_beam, expected):
    from service.pipeline.audio import AudioFormat, Encoding
    from service.recognizer import Recognizer
    from service.session import StreamConfig

    recognizer = Recognizer(tiny_model_dir, inference_threads=1, beam_size=server_beam)
    config = StreamConfig(AudioFormat(Encoding.LINEAR16, 16000, 1), max_alternatives=alternatives,
                          beam_size=request_beam)
    segment = recognizer.new_segment(0.0, config.decode_options())
    assert segment.decoder.options.beam_size == expected


@pytest.mark.parametrize("argv,server_threshold", [([], 0.0), (["--beam-threshold", "3.5"], 3.5)])
def test_beam_threshold_comes_from_the_server_setting(tiny_model_dir, monkeypatch, argv, server_threshold):
    from service.config import load_settings
    from service.recognizer import Recognizer

    monkeypatch.setenv("STT_BEAM_THRESHOLD", "0")  # the flag, when given, overrides the environment
    settings = load_settings(argv)
    assert settings.beam_threshold == server_threshold
    recognizer = Recognizer(tiny_model_dir, inference_threads=1, beam_threshold=settings.beam_threshold)
    assert recognizer.new_segment(0.0, DecodeOptions(beam_size=None)).decoder.options.beam_threshold == server_threshold


def test_the_stable_prefix_counts_hypotheses_that_already_ended(graphs):
    """Without CTC an end can be accepted mid-segment; the final may come from that finished
    hypothesis, so the committed prefix must be shared by it too, not by the active ones alone."""
    info, _, _ = graphs
    decoder = WindowedDecoder(info, DecodeOptions(beam_size=2, ctc_weight=0.0))

    def hyp(tokens):
        w = np.zeros(info.window_size, np.float32)
        return Hyp(list(tokens), [-0.1] * len(tokens), np.zeros(1), np.zeros(1), w, 0, 0)

    decoder.active = [hyp([5, 6, 7, 8]), hyp([5, 6, 7, 9])]
    assert decoder.stable_length() == 3
    decoder.finished = [hyp([5, 4, decoder.eos])]
    assert decoder.stable_length() == 1


@pytest.mark.parametrize("lead_s", [0.0, 0.35, 1.0])
def test_the_first_window_starts_where_ctc_hears_speech(bundled_graphs, lead_s):
    """A first window fixed at the segment start held no speech after 0.35-0.4 s of silence, and
    v1.6.0 and v1.7.0 alike guessed a first word from silence: "i open the door" (session 18).
    The first window now waits for CTC's first non-blank frame and centres before it; streaming
    still equals offline, and no step runs before that frame is encoded."""
    from service.pipeline.decoder import FIRST_WINDOW_LEAD

    info, enc, dec = bundled_graphs
    audio = np.concatenate([silence(lead_s), synthesize("open the door"), silence(0.3)])
    options = DecodeOptions(beam_size=4, ctc_weight=0.3)
    ref, store = offline(info, enc, dec, audio, options)
    blank = info.vocab.index("<blank>")
    onset = int(np.flatnonzero(store.ctc_logp()[:, blank] <= np.log(0.5))[0])
    assert onset * info.frame_shift_s >= lead_s - 0.05  # CTC hears nothing in the silence
    best = ref.nbest()[0]
    assert best.align[0][0] == max(0, onset - FIRST_WINDOW_LEAD) - info.window_back
    assert Tokenizer(info.vocab).decode(best.content_tokens(ref.eos)) == "open the door"
    for seed in range(2):
        got, _, early_steps = streaming(info, enc, dec, audio, options, np.random.default_rng(seed))
        assert early_steps > 0
        assert got.nbest()[0].tokens == best.tokens
        assert [s for s, _ in got.nbest()[0].align] == [s for s, _ in best.align]
    # streamed frame by frame, the first step waits for the onset frame and its window
    fe, chunker, live, state = FeatureExtractor(info.features), FeatureChunker(info, 4), FrameStore(info), enc.zero_state()
    waiting = WindowedDecoder(info, options)
    for chunk in chunker.push(fe.process(audio)):
        state = _encode(enc, state, chunk, live)
        if (req := waiting.next_step(live, ended=False)) is not None:
            assert live.length > onset and live.length >= req.starts[0] + info.window_size
            break
    else:
        pytest.fail("the first step never ran before the segment end")
