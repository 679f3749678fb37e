"""CTC prefix scores for joint CTC/attention decoding (Watanabe et al. 2017), bounded by the window.

The CTC head sees the same encoder frames as the attention decoder. For a prefix h and a
token c, psi(h + c, T) is the probability that the CTC output of frames [0, T) starts
with h + c. Over c and "h is complete", psi(h + c, T) / psi(h, T) is a proper conditional
distribution, and joint decoding adds its log, weighted, to the attention log-prob. The
attention decoder alone drops and repeats words when its alignment slips; CTC cannot.

T is the end of the decoding step's window (or the segment end): a function of the frames
alone, never of how the audio was chunked, so streaming still equals offline decoding.

Forward variables per prefix (Graves 2012, 7.3), log domain, t < T:
    r_n[t]: paths over frames [0, t] that emit exactly the prefix and end in its last token
    r_b[t]: the same, ending in blank
Both recurrences have the form x[t] = logaddexp(x[t-1], a[t]) + p[t] and are solved in
closed form with one cumulative sum and one logaddexp.accumulate per extension, so a
step costs a few vector operations instead of a Python loop over frames.
"""
from __future__ import annotations

import numpy as np

# Service default for the joint weight: lowest dev WER of 0/0.3/0.5/0.7 (docs/BENCHMARKS.md, "Joint CTC/attention weight").
DEFAULT_CTC_WEIGHT = 0.3
NEG_INF = -np.inf
SCORE_FLOOR = -1.0e3


def _recurrence(init: float, a: np.ndarray, p: np.ndarray) -> np.ndarray:
    """x[k] = logaddexp(x[k-1], a[k]) + p[k] for k in [0, n), x[-1] = init. (n,) float64 in and out.

    With L = cumsum(p), y[k] = x[k] - L[k] obeys y[k] = logaddexp(y[k-1], a[k] - L[k-1]).
    """
    cum = np.cumsum(p)
    shifted = a - np.concatenate([[0.0], cum[:-1]])
    y = np.logaddexp.accumulate(np.concatenate([[init], shifted]))[1:]
    return y + cum


class CtcPrefix:
    """Forward variables of one prefix, computed lazily up to the frames asked for.

    Children share their parent (a prefix tree over the beam), so extending a hypothesis
    to new frames extends each ancestor once.
    """

    __slots__ = ("parent", "token", "r_n", "r_b")

    def __init__(self, parent: "CtcPrefix | None" = None, token: int = -1) -> None:
        self.parent = parent
        self.token = token  # last token of the prefix; -1 for the empty prefix
        self.r_n = np.zeros(0)
        self.r_b = np.zeros(0)

    @property
    def is_root(self) -> bool:
        return self.parent is None

    def child(self, token: int) -> "CtcPrefix":
        return CtcPrefix(self, token)

    def extend(self, logp: np.ndarray, blank: int, n: int) -> None:
        """Forward variables up to frame n. logp (T, V) CTC log-probs of the segment, T >= n."""
        t0 = len(self.r_n)
        if n <= t0:
            return
        lp_blank = logp[t0:n, blank].astype(np.float64)
        if self.parent is None:  # only blanks so far
            start = self.r_b[-1] if t0 else 0.0
            self.r_n = np.full(n, NEG_INF)
            self.r_b = np.concatenate([self.r_b, start + np.cumsum(lp_blank)])
            return
        self.parent.extend(logp, blank, n)
        prev_n = self.r_n[-1] if t0 else NEG_INF
        new_n = _recurrence(prev_n, self.parent.entry(t0, n, self.token == self.parent.token),
                            logp[t0:n, self.token].astype(np.float64))
        n_before = np.concatenate([[prev_n], new_n[:-1]])
        new_b = _recurrence(self.r_b[-1] if t0 else NEG_INF, n_before, lp_blank)
        self.r_n = np.concatenate([self.r_n, new_n])
        self.r_b = np.concatenate([self.r_b, new_b])

    def entry(self, lo: int, hi: int, repeat: bool) -> np.ndarray:
        """log prob of being ready to emit a next token after this prefix, at frame t - 1, for t in [lo, hi).

        `repeat`: the next token equals this prefix's last one, so a blank must come in
        between (only r_b counts). At t = 0 only the empty prefix is ready (probability 1).
        """
        out = np.empty(hi - lo)
        first = 0
        if lo == 0:
            out[0] = 0.0 if self.is_root else NEG_INF
            first = 1
        idx = np.arange(lo + first - 1, hi - 1)
        out[first:] = self.r_b[idx] if repeat else np.logaddexp(self.r_n[idx], self.r_b[idx])
        return out

    def prefix_score(self, logp: np.ndarray, blank: int, n: int) -> float:
        """log psi(self, n): the CTC output of frames [0, n) starts with this prefix."""
        if self.parent is None:
            return 0.0
        self.extend(logp, blank, n)
        ready = self.parent.entry(0, n, self.token == self.parent.token)
        return float(np.logaddexp.reduce(ready + logp[:n, self.token]))

    def scores(self, logp: np.ndarray, blank: int, n: int, tokens: np.ndarray) -> tuple[np.ndarray, float]:
        """CTC log-probs of the next token given this prefix, over frames [0, n).

        tokens (K,) candidate ids (not blank) -> ((K,) log psi(h + c) - log psi(h),
        log P(output == h) - log psi(h) for ending here).
        """
        self.extend(logp, blank, n)
        own = self.prefix_score(logp, blank, n)
        if not np.isfinite(own):  # more tokens than the frames can hold: CTC has nothing to add
            return np.zeros(len(tokens)), 0.0
        ready_any, ready_same = self.entry(0, n, repeat=False), self.entry(0, n, repeat=True)
        ready = np.where((tokens == self.token)[None, :], ready_same[:, None], ready_any[:, None])  # (n, K)
        psi = np.logaddexp.reduce(ready + logp[:n, tokens], axis=0)
        end = float(np.logaddexp(self.r_n[n - 1], self.r_b[n - 1]))
        # a floor keeps impossible continuations finite, so scores never become nan
        return np.maximum(psi - own, SCORE_FLOOR), max(end - own, SCORE_FLOOR)
