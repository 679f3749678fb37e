"""CTC prefix scores against brute-force enumeration of every CTC path."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from service.pipeline.ctc_prefix import CtcBeam

BLANK = 0


def _collapse(path: tuple[int, ...]) -> tuple[int, ...]:
    out, prev = [], BLANK
    for s in path:
        if s != BLANK and s != prev:
            out.append(s)
        prev = s
    return tuple(out)


def _brute(logp: np.ndarray, n: int) -> dict[tuple[int, ...], float]:
    """Probability of each collapsed output of frames [0, n)."""
    probs: dict[tuple[int, ...], float] = {}
    p = np.exp(logp.astype(np.float64))
    for path in itertools.product(range(logp.shape[1]), repeat=n):
        out = _collapse(path)
        probs[out] = probs.get(out, 0.0) + float(np.prod([p[t, s] for t, s in enumerate(path)]))
    return probs


def _psi(probs: dict[tuple[int, ...], float], prefix: tuple[int, ...]) -> float:
    return sum(v for out, v in probs.items() if out[: len(prefix)] == prefix)


def _beam(prefixes: list[tuple[int, ...]], logp: np.ndarray, grow: tuple[int, ...] = ()) -> CtcBeam:
    """One row per prefix (all of one length); grow[l]: frames computed before token l is added."""
    beam = CtcBeam.root(len(prefixes))
    for l in range(len(prefixes[0])):
        if l < len(grow):
            beam.extend(logp, BLANK, grow[l])
        beam = beam.select(np.arange(len(prefixes)), np.array([p[l] for p in prefixes]), logp, BLANK)
    return beam


@pytest.fixture
def logp():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(6, 3)) * 2
    return (x - np.log(np.exp(x).sum(1, keepdims=True))).astype(np.float32)


PREFIXES = [(), (1,), (2,), (1, 1), (1, 2), (2, 1, 2)]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("n", [1, 3, 6])
def test_next_token_scores_match_enumeration(logp, prefix, n):
    probs = _brute(logp, n)
    beam = _beam([prefix], logp)
    deltas, end = beam.scores(logp, BLANK, np.array([n]), np.array([[1, 2]]))
    own = _psi(probs, prefix)
    if own == 0.0:  # prefix longer than the frames allow
        assert beam.prefix_scores(logp, BLANK, np.array([n]))[0] == -np.inf
        return
    assert np.isclose(beam.prefix_scores(logp, BLANK, np.array([n]))[0], np.log(own), atol=1e-5)
    for c, d in zip([1, 2], deltas[0]):
        assert np.isclose(np.exp(d), _psi(probs, prefix + (c,)) / own, atol=1e-5)
    assert np.isclose(np.exp(end[0]), probs.get(prefix, 0.0) / own, atol=1e-5)
    # a proper distribution over the next token and "end here"
    assert np.isclose(np.exp(deltas).sum() + np.exp(end[0]), 1.0, atol=1e-5)


@pytest.mark.parametrize("length", [0, 1, 2, 3])
def test_a_beam_scores_each_row_as_if_alone(logp, length):
    """Rows of one beam with their own window ends (bounds) score exactly as beams of one row,
    even though the beam computes every row up to the furthest bound."""
    prefixes = [p for p in [(), (1,), (2,), (1, 1), (1, 2), (2, 1), (2, 1, 2), (1, 1, 2), (2, 2, 1)]
                if len(p) == length]
    bounds = np.array([6, 3, 5, 4][: len(prefixes)])
    tokens = np.array([[1, 2], [2, 1], [1, 1], [2, 2]][: len(prefixes)])
    together = _beam(prefixes, logp, grow=(2, 4))
    deltas, ends = together.scores(logp, BLANK, bounds, tokens)
    for i, prefix in enumerate(prefixes):
        alone = _beam([prefix], logp, grow=(2, 4))
        d, e = alone.scores(logp, BLANK, bounds[i: i + 1], tokens[i: i + 1])
        np.testing.assert_array_equal(deltas[i], d[0])
        assert ends[i] == e[0]


@pytest.mark.parametrize("steps", [(1, 2, 3, 4, 5, 6), (1, 2, 4, 6), (2, 6), (5, 6)])
def test_incremental_extension_equals_one_pass(logp, steps):
    """A few frames at a time (frame by frame over all prefixes) or many (prefix by prefix in
    closed form), and children added to a partly extended parent: the same forward variables."""
    a, b = _beam([(1, 2, 2), (2, 1, 1)], logp), _beam([(1, 2, 2), (2, 1, 1)], logp)
    for n in steps:
        a.extend(logp, BLANK, n)
    b.extend(logp, BLANK, 6)
    for row in range(2):
        np.testing.assert_allclose(a.r_n(row), b.r_n(row))
        np.testing.assert_allclose(a.r_b(row), b.r_b(row))
    late = _beam([(1, 2, 2), (2, 1, 1)], logp, grow=(steps[0], steps[0]))
    np.testing.assert_allclose(late.scores(logp, BLANK, np.array([6, 6]), np.array([[1, 2], [1, 2]]))[0],
                               b.scores(logp, BLANK, np.array([6, 6]), np.array([[1, 2], [1, 2]]))[0])


def test_a_beam_holds_memory_linear_in_frames_plus_tokens():
    """Long segments: each row keeps its frontier (L + 1) and two histories (T), not L x T."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 40))
    logp = (x - np.log(np.exp(x).sum(1, keepdims=True))).astype(np.float32)
    beam = CtcBeam.root()
    for step in range(1, 601):  # 600 tokens, the window moving 5 frames per token, two rows
        parents = np.zeros(2, np.int64) if step == 1 else np.arange(2)  # two rows from the root, then one child each
        beam = beam.select(parents, rng.integers(1, 40, size=2), logp, BLANK)
        beam.scores(logp, BLANK, np.array([5 * step, 5 * step - 2]), np.array([[1, 2, 3], [1, 2, 3]]))
    held = sum(a.nbytes for a in (beam.front_n, beam.front_b, beam.own_n, beam.own_b, beam.par_n, beam.par_b))
    assert beam.front_n.shape == (2, 601)
    assert held <= 2 * 8 * (2 * 601 + 4 * 2 * (3000 + 1))  # frontier + four histories (at most 2x spare)


def test_a_prefix_longer_than_the_frames_scores_only_its_end(logp):
    """Four tokens cannot come out of three frames: every token gets the floor, the end 0 (the
    hypothesis can only end), and there is no frame to jump to (no nan from all -inf)."""
    beam = _beam([(1, 2, 1, 2)], logp[:3])
    deltas, end = beam.scores(logp[:3], BLANK, np.array([3]), np.array([[1, 2]]))
    assert deltas.tolist() == [[-1000.0, -1000.0]] and end.tolist() == [0.0]
    with np.errstate(invalid="raise"):
        assert beam.next_token_frame(0, logp[:3], BLANK) == 0


def _peaked(n_frames: int, tokens: list[int], others: list[int], every: int, vocab: int, rng) -> np.ndarray:
    """(T, V) CTC log-probs of speech: token k peaks at frame every * (k + 1), a likely other
    reading of it (others[k]) a little lower, blank elsewhere."""
    x = rng.normal(size=(n_frames, vocab))
    x[:, BLANK] += 8.0
    for k, (tok, other) in enumerate(zip(tokens, others)):
        x[every * (k + 1), tok] += 16.0
        x[every * (k + 1), other] += 15.0
    return (x - np.log(np.exp(x).sum(1, keepdims=True))).astype(np.float32)


def _decode_along(logp: np.ndarray, tokens: list[int], others: list[int], every: int):
    """A two-row beam, both rows children of the first (the tokens, then the other reading), scored
    each step on windows ending a few frames past the next peak: the scores per step and the spans
    of frames the beam still counts."""
    beam, out, spans = CtcBeam.root(), [], []
    cand = np.array([[1, 2, 3], [1, 2, 3]])
    for k, (tok, other) in enumerate(zip(tokens, others)):
        beam = beam.select(np.array([0, 0]), np.array([tok, other]), logp, BLANK)
        bound = every * (k + 2) + 4
        out.append(beam.scores(logp, BLANK, np.array([bound, bound - 2]), cand))
        spans.append(beam.n - beam.lo)
    return out, spans


def test_scores_count_only_the_live_frames_and_equal_the_sum_over_all(monkeypatch):
    """A long segment: the frames a step sums over stay bounded (the cost of a step does not grow
    with the segment), and the scores equal the untruncated sums from frame 0."""
    import service.pipeline.ctc_prefix as ctc_prefix

    rng = np.random.default_rng(5)
    tokens = [int(t) for t in rng.integers(1, 4, size=300)]
    others = [1 + t % 3 for t in tokens]
    logp = _peaked(6 * 302 + 8, tokens, others, 6, 4, rng)
    live, spans = _decode_along(logp, tokens, others, 6)
    monkeypatch.setattr(ctc_prefix, "LIVE_MARGIN", np.inf)  # every frame counts: lo stays 0
    full, full_spans = _decode_along(logp, tokens, others, 6)
    assert full_spans[-1] > 1800 and max(spans) < 120 and max(spans[-100:]) <= max(spans[100:200]) + 8, spans
    for (d, e), (fd, fe) in zip(live, full):
        np.testing.assert_allclose(d, fd, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(e, fe, rtol=1e-12, atol=1e-9)
