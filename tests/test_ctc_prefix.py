"""CTC prefix scores against brute-force enumeration of every CTC path."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from service.pipeline.ctc_prefix import CtcPrefix

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


def _node(prefix: tuple[int, ...]) -> CtcPrefix:
    node = CtcPrefix()
    for t in prefix:
        node = node.child(t)
    return node


@pytest.fixture
def logp():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(6, 3)) * 2
    return (x - np.log(np.exp(x).sum(1, keepdims=True))).astype(np.float32)


@pytest.mark.parametrize("prefix", [(), (1,), (2,), (1, 1), (1, 2), (2, 1, 2)])
@pytest.mark.parametrize("n", [1, 3, 6])
def test_next_token_scores_match_enumeration(logp, prefix, n):
    probs = _brute(logp, n)
    node = _node(prefix)
    deltas, end = node.scores(logp, BLANK, n, np.array([1, 2]))
    own = _psi(probs, prefix)
    if own == 0.0:  # prefix longer than the frames allow
        assert node.prefix_score(logp, BLANK, n) == -np.inf
        return
    assert np.isclose(node.prefix_score(logp, BLANK, n), np.log(own), atol=1e-5)
    for c, d in zip([1, 2], deltas):
        assert np.isclose(np.exp(d), _psi(probs, prefix + (c,)) / own, atol=1e-5)
    assert np.isclose(np.exp(end), probs.get(prefix, 0.0) / own, atol=1e-5)
    # a proper distribution over the next token and "end here"
    assert np.isclose(np.exp(deltas).sum() + np.exp(end), 1.0, atol=1e-5)


@pytest.mark.parametrize("steps", [(1, 2, 3, 4, 5, 6), (1, 2, 4, 6), (2, 6), (5, 6)])
def test_incremental_extension_equals_one_pass(logp, steps):
    """A few frames at a time (frame by frame over all rows) or many (row by row in closed
    form), and children built from a partly extended parent: the same forward variables."""
    a, b = _node((1, 2, 2)), _node((1, 2, 2))
    for n in steps:
        a.extend(logp, BLANK, n)
    b.extend(logp, BLANK, 6)
    np.testing.assert_allclose(a.r_n, b.r_n)
    np.testing.assert_allclose(a.r_b, b.r_b)
    grown = _node((1,))
    grown.extend(logp, BLANK, steps[0])
    late = grown.child(2).child(2)
    np.testing.assert_allclose(late.scores(logp, BLANK, 6, np.array([1, 2]))[0],
                               b.scores(logp, BLANK, 6, np.array([1, 2]))[0])


def test_a_hypothesis_holds_memory_linear_in_frames_plus_tokens():
    """Long segments: each prefix keeps its frontier (L + 1) and two rows of history (T), not L x T."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 40))
    logp = (x - np.log(np.exp(x).sum(1, keepdims=True))).astype(np.float32)
    node = CtcPrefix()
    for step in range(1, 601):  # 600 tokens, the window moving 5 frames per token
        node = node.child(int(rng.integers(1, 40)))
        node.scores(logp, BLANK, 5 * step, np.array([1, 2, 3]))
    held = sum(a.nbytes for a in (node._front_n, node._front_b, node._hist_n, node._hist_b))
    assert len(node._front_n) == 601
    assert held <= 8 * (2 * 601 + 4 * 2 * (3000 + 1))  # frontier + two history columns (at most 2x spare)
