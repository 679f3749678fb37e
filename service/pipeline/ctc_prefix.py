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
Both recurrences have the form x[t] = logaddexp(x[t-1], a[t]) + p[t]. As the window
moves, every prefix of the hypothesis needs the new frames, so each hypothesis keeps the
variables of all its prefixes (a lattice, CtcPrefix) and advances them together: a few
frames at a time with one vector operation over the prefixes per frame, many frames one
prefix at a time in closed form (one cumulative sum and one logaddexp.accumulate).
"""
from __future__ import annotations

import numpy as np

# Service default for the joint weight: lowest dev WER of 0/0.3/0.5/0.7 (docs/BENCHMARKS.md, "Joint CTC/attention weight").
DEFAULT_CTC_WEIGHT = 0.3
NEG_INF = -np.inf
SCORE_FLOOR = -1.0e3
_HEADROOM = 16  # spare frames per lattice: a window advances a few frames per decoding step


def _recurrence(init: float, a: np.ndarray, p: np.ndarray) -> np.ndarray:
    """x[k] = logaddexp(x[k-1], a[k]) + p[k] for k in [0, n), x[-1] = init. (n,) float64 in and out.

    With L = cumsum(p), y[k] = x[k] - L[k] obeys y[k] = logaddexp(y[k-1], a[k] - L[k-1]).
    """
    cum = np.cumsum(p)
    shifted = a - np.concatenate([[0.0], cum[:-1]])
    y = np.logaddexp.accumulate(np.concatenate([[init], shifted]))[1:]
    return y + cum


class CtcPrefix:
    """CTC forward variables of one prefix: its whole lattice, computed up to the frames asked for.

    Row l of the lattice holds the forward variables of the prefix's first l tokens (row 0:
    the empty prefix), frames in the first axis: r_n, r_b (cap, L + 1) float64. A child
    copies its parent's lattice and adds one row, so extending to new frames is one vector
    operation over all rows per frame, instead of one small recurrence per ancestor (the
    decoder's window moves a few frames per step; the ancestors are as many as the tokens).
    A long stretch of new frames (a segment end, a window jump) goes row by row in closed
    form instead; either way the values depend only on the frames, never on the chunking.
    """

    __slots__ = ("token", "labels", "_same", "_parent", "_rn", "_rb", "_n")

    def __init__(self) -> None:
        self.token = -1  # last token of the prefix; -1 for the empty prefix
        self.labels = np.zeros(0, np.int64)  # (L,) the prefix
        self._same = np.zeros(0, bool)  # (L,) token l repeats token l - 1: a blank must come between
        self._parent: CtcPrefix | None = None  # until the lattice is built (lazily, on first use)
        self._rn, self._rb = self._alloc(_HEADROOM, 1)
        self._n = 0  # frames computed

    @property
    def is_root(self) -> bool:
        return len(self.labels) == 0

    @property
    def r_n(self) -> np.ndarray:
        """(n,) log prob of frames [0, t] emitting exactly this prefix, ending in its last token."""
        return self._rn[: self._n, -1]

    @property
    def r_b(self) -> np.ndarray:
        """(n,) the same, ending in blank."""
        return self._rb[: self._n, -1]

    def child(self, token: int) -> "CtcPrefix":
        node = CtcPrefix.__new__(CtcPrefix)
        node.token = token
        node.labels = np.append(self.labels, token)
        node._same = np.append(self._same, token == self.token)
        node._parent = self
        node._rn = node._rb = None
        node._n = 0
        return node

    def extend(self, logp: np.ndarray, blank: int, n: int) -> None:
        """Forward variables up to frame n. logp (T, V) CTC log-probs of the segment, T >= n."""
        if self._rn is None:
            self._build(logp, blank)
        t0 = self._n
        if n <= t0:
            return
        self._reserve(n)
        lp_tok = logp[t0:n][:, self.labels].astype(np.float64)  # (d, L)
        lp_blank = logp[t0:n, blank].astype(np.float64)  # (d,)
        if n - t0 > self._rn.shape[1]:
            self._extend_rows(t0, n, lp_tok, lp_blank)
        else:
            self._extend_frames(t0, n, lp_tok, lp_blank)
        self._n = n

    def _build(self, logp: np.ndarray, blank: int) -> None:
        """The lattice from the parent's: its rows over the frames it has, plus this prefix's row."""
        parent = self._parent
        if parent._rn is None:
            parent._build(logp, blank)
        n, rows = parent._n, len(self.labels) + 1
        self._rn, self._rb = self._alloc(n + _HEADROOM, rows)  # the next step extends by a few frames
        self._rn[:n, :-1] = parent._rn[:n]
        self._rb[:n, :-1] = parent._rb[:n]
        self._n = 0
        if n:
            self._extend_row(rows - 1, 0, n, logp[:n, self.token].astype(np.float64),
                             logp[:n, blank].astype(np.float64))
        self._n = n
        self._parent = None  # the copy is all this node needs

    @staticmethod
    def _alloc(cap: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Uninitialized (cap, rows) r_n, r_b; only r_n of the empty prefix (row 0) is preset: never a token."""
        rn, rb = np.empty((cap, rows)), np.empty((cap, rows))
        rn[:, 0] = NEG_INF
        return rn, rb

    def _reserve(self, n: int) -> None:
        if n > len(self._rn):
            rn, rb = self._alloc(max(n + _HEADROOM, 2 * len(self._rn)), self._rn.shape[1])
            rn[: self._n], rb[: self._n] = self._rn[: self._n], self._rb[: self._n]
            self._rn, self._rb = rn, rb

    def _extend_frames(self, t0: int, n: int, lp_tok: np.ndarray, lp_blank: np.ndarray) -> None:
        """Frame by frame, all rows at once: r[t] from r[t - 1]."""
        rn, rb, same = self._rn, self._rb, self._same
        for t in range(t0, n):
            if t == 0:
                prev_n = np.full(rn.shape[1], NEG_INF)
                prev_b = prev_n.copy()
                prev_b[0] = 0.0  # before any frame only the empty prefix is complete
            else:
                prev_n, prev_b = rn[t - 1], rb[t - 1]
            ready = np.where(same, prev_b[:-1], np.logaddexp(prev_n[:-1], prev_b[:-1]))
            rn[t, 1:] = np.logaddexp(prev_n[1:], ready) + lp_tok[t - t0]
            rb[t] = np.logaddexp(prev_b, prev_n) + lp_blank[t - t0]

    def _extend_rows(self, t0: int, n: int, lp_tok: np.ndarray, lp_blank: np.ndarray) -> None:
        """Row by row, each in closed form over frames [t0, n)."""
        for row in range(self._rn.shape[1]):
            self._extend_row(row, t0, n, lp_tok[:, row - 1] if row else None, lp_blank)

    def _extend_row(self, row: int, t0: int, n: int, lp_tok: np.ndarray | None, lp_blank: np.ndarray) -> None:
        """Row `row` over frames [t0, n); rows above it must already reach n - 1."""
        rn, rb = self._rn[:, row], self._rb[:, row]
        if row == 0:  # only blanks so far
            rb[t0:n] = (rb[t0 - 1] if t0 else 0.0) + np.cumsum(lp_blank)
            return
        prev_n = rn[t0 - 1] if t0 else NEG_INF
        new_n = _recurrence(prev_n, self._ready(row - 1, t0, n, bool(self._same[row - 1])), lp_tok)
        rn[t0:n] = new_n
        n_before = np.concatenate([[prev_n], new_n[:-1]])
        rb[t0:n] = _recurrence(rb[t0 - 1] if t0 else NEG_INF, n_before, lp_blank)

    def _ready(self, row: int, lo: int, hi: int, repeat: bool) -> np.ndarray:
        """log prob that the prefix of `row` tokens is complete at frame t - 1, for t in [lo, hi).

        `repeat`: the next token equals that prefix's last one, so a blank must come in
        between (only r_b counts). At t = 0 only the empty prefix is complete (probability 1).
        """
        out = np.empty(hi - lo)
        first = 0
        if lo == 0:
            out[0] = 0.0 if row == 0 else NEG_INF
            first = 1
        rb = self._rb[lo + first - 1: hi - 1, row]
        out[first:] = rb if repeat else np.logaddexp(self._rn[lo + first - 1: hi - 1, row], rb)
        return out

    def entry(self, lo: int, hi: int, repeat: bool) -> np.ndarray:
        """log prob of being ready to emit a next token after this prefix, at frame t - 1, for t in [lo, hi)."""
        return self._ready(len(self.labels), lo, hi, repeat)

    def prefix_score(self, logp: np.ndarray, blank: int, n: int) -> float:
        """log psi(self, n): the CTC output of frames [0, n) starts with this prefix."""
        if self.is_root:
            return 0.0
        self.extend(logp, blank, n)
        ready = self._ready(len(self.labels) - 1, 0, n, bool(self._same[-1]))
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
        paths = self.entry(0, n, repeat=False)[:, None] + logp[:n, tokens]  # (n, K)
        repeat = tokens == self.token
        if repeat.any():  # a repeated token needs a blank in between
            paths[:, repeat] = (self.entry(0, n, repeat=True) + logp[:n, self.token])[:, None]
        psi = np.logaddexp.reduce(paths, axis=0)
        end = float(np.logaddexp(self.r_n[n - 1], self.r_b[n - 1]))
        # a floor keeps impossible continuations finite, so scores never become nan
        return np.maximum(psi - own, SCORE_FLOOR), max(end - own, SCORE_FLOOR)
