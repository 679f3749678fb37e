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
moves, every prefix of the hypothesis needs the new frames, so each hypothesis advances the
variables of all its prefixes together (CtcPrefix): a few frames at a time with one vector
operation over the prefixes per frame, many frames one prefix at a time in closed form (one
cumulative sum and one logaddexp.accumulate).
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
    """CTC forward variables of one prefix (hypothesis), computed up to the frames asked for.

    Extending to new frames needs every shorter prefix too (row l: the first l tokens; row 0:
    the empty prefix), but only at the latest frame: the frontier (L + 1,). The scores need
    the full history of two rows only, this prefix's and its parent's: hist_n, hist_b
    (1 + frames, 2) float64, where hist[t + 1] is frame t and hist[0] the state before frame 0.
    So a hypothesis holds O(L + T) numbers, and a child copies its parent's frontier and last
    history row and adds its own row. A few new frames (the window moves a few per step) go
    frame by frame, one vector operation over all rows each; a long stretch (a segment end, a
    window jump) goes row by row in closed form. Either way the values depend only on the
    frames, never on the chunking.
    """

    __slots__ = ("token", "labels", "_same", "_parent", "_front_n", "_front_b", "_hist_n", "_hist_b", "_n")

    def __init__(self) -> None:
        self.token = -1  # last token of the prefix; -1 for the empty prefix
        self.labels = np.zeros(0, np.int64)  # (L,) the prefix
        self._same = np.zeros(0, bool)  # (L,) token l repeats token l - 1: a blank must come between
        self._parent: CtcPrefix | None = None  # until built (lazily, on first use)
        # before frame 0 only the empty prefix is complete: r_b = log 1
        self._front_n, self._front_b = np.array([NEG_INF]), np.array([0.0])
        self._hist_n, self._hist_b = self._alloc(_HEADROOM)
        self._hist_n[0, 1], self._hist_b[0, 1] = NEG_INF, 0.0
        self._n = 0  # frames computed

    @property
    def is_root(self) -> bool:
        return len(self.labels) == 0

    @property
    def r_n(self) -> np.ndarray:
        """(n,) log prob of frames [0, t] emitting exactly this prefix, ending in its last token."""
        return self._hist_n[1: self._n + 1, 1]

    @property
    def r_b(self) -> np.ndarray:
        """(n,) the same, ending in blank."""
        return self._hist_b[1: self._n + 1, 1]

    def child(self, token: int) -> "CtcPrefix":
        node = CtcPrefix.__new__(CtcPrefix)
        node.token = token
        node.labels = np.append(self.labels, token)
        node._same = np.append(self._same, token == self.token)
        node._parent = self
        node._n = 0
        return node

    def extend(self, logp: np.ndarray, blank: int, n: int) -> None:
        """Forward variables up to frame n. logp (T, V) CTC log-probs of the segment, T >= n."""
        if self._parent is not None:
            self._build(logp, blank)
        t0 = self._n
        if n <= t0:
            return
        self._reserve(n)
        lp_tok = logp[t0:n][:, self.labels].astype(np.float64)  # (d, L)
        lp_blank = logp[t0:n, blank].astype(np.float64)  # (d,)
        if n - t0 > len(self._front_n):
            self._extend_rows(t0, n, lp_tok, lp_blank)
        else:
            self._extend_frames(t0, n, lp_tok, lp_blank)
        self._n = n

    def _build(self, logp: np.ndarray, blank: int) -> None:
        """From the parent, at the frames it has: its frontier plus this prefix's row; its own
        row's history becomes this node's parent column."""
        parent = self._parent
        if parent._parent is not None:
            parent._build(logp, blank)
        n = parent._n
        self._hist_n, self._hist_b = self._alloc(n + _HEADROOM)  # the next step extends by a few frames
        self._hist_n[: n + 1, 0] = parent._hist_n[: n + 1, 1]
        self._hist_b[: n + 1, 0] = parent._hist_b[: n + 1, 1]
        own_n, own_b = self._hist_n[:, 1], self._hist_b[:, 1]
        own_n[0] = own_b[0] = NEG_INF  # a token needs a frame
        if n:
            own_n[1: n + 1] = _recurrence(NEG_INF, self._ready(0, 0, n, bool(self._same[-1])),
                                          logp[:n, self.token].astype(np.float64))
            own_b[1: n + 1] = _recurrence(NEG_INF, own_n[:n], logp[:n, blank].astype(np.float64))
        self._front_n = np.append(parent._front_n, own_n[n])
        self._front_b = np.append(parent._front_b, own_b[n])
        self._n = n
        self._parent = None  # all this node needs is copied

    @staticmethod
    def _alloc(frames: int) -> tuple[np.ndarray, np.ndarray]:
        """Uninitialized (1 + frames, 2) histories (column 0: the parent's row, 1: this prefix's);
        the root has no parent row: that column stays -inf."""
        hist_n, hist_b = np.empty((frames + 1, 2)), np.empty((frames + 1, 2))
        hist_n[:, 0] = hist_b[:, 0] = NEG_INF
        return hist_n, hist_b

    def _reserve(self, n: int) -> None:
        if n + 1 > len(self._hist_n):
            hist_n, hist_b = self._alloc(max(n + _HEADROOM, 2 * len(self._hist_n)))
            hist_n[: self._n + 1], hist_b[: self._n + 1] = self._hist_n[: self._n + 1], self._hist_b[: self._n + 1]
            self._hist_n, self._hist_b = hist_n, hist_b

    def _extend_frames(self, t0: int, n: int, lp_tok: np.ndarray, lp_blank: np.ndarray) -> None:
        """Frame by frame, all rows at once: the frontier at t from the frontier at t - 1."""
        prev_n, prev_b, same = self._front_n, self._front_b, self._same
        k = min(len(prev_n), 2)  # history columns held (the root has no parent row)
        for t in range(t0, n):
            ready = np.where(same, prev_b[:-1], np.logaddexp(prev_n[:-1], prev_b[:-1]))
            new_n = np.empty_like(prev_n)
            new_n[0] = NEG_INF
            new_n[1:] = np.logaddexp(prev_n[1:], ready) + lp_tok[t - t0]
            prev_b = np.logaddexp(prev_b, prev_n) + lp_blank[t - t0]
            prev_n = new_n
            self._hist_n[t + 1, 2 - k:] = prev_n[-k:]
            self._hist_b[t + 1, 2 - k:] = prev_b[-k:]
        self._front_n, self._front_b = prev_n, prev_b

    def _extend_rows(self, t0: int, n: int, lp_tok: np.ndarray, lp_blank: np.ndarray) -> None:
        """Row by row, each in closed form over frames [t0, n); only the row above is kept."""
        rows = len(self._front_n)
        front_n, front_b = np.empty(rows), np.empty(rows)
        row_n = row_b = None
        for row in range(rows):
            if row == 0:  # the empty prefix: only blanks, never ends in a token
                row_n, row_b = np.full(n - t0, NEG_INF), self._front_b[0] + np.cumsum(lp_blank)
            else:
                # readiness of the row above at t - 1, for t in [t0, n)
                above_n = np.concatenate([[self._front_n[row - 1]], row_n[:-1]])
                above_b = np.concatenate([[self._front_b[row - 1]], row_b[:-1]])
                entry = above_b if self._same[row - 1] else np.logaddexp(above_n, above_b)
                row_n = _recurrence(self._front_n[row], entry, lp_tok[:, row - 1])
                row_b = _recurrence(self._front_b[row], np.concatenate([[self._front_n[row]], row_n[:-1]]), lp_blank)
            if row >= rows - 2:  # the parent's row (column 0) and this prefix's (column 1)
                col = 1 - (rows - 1 - row)
                self._hist_n[t0 + 1: n + 1, col], self._hist_b[t0 + 1: n + 1, col] = row_n, row_b
            front_n[row], front_b[row] = row_n[-1], row_b[-1]
        self._front_n, self._front_b = front_n, front_b

    def _ready(self, col: int, lo: int, hi: int, repeat: bool) -> np.ndarray:
        """log prob that the prefix of history column `col` (0: parent, 1: this) is complete at
        frame t - 1, for t in [lo, hi). `repeat`: the next token equals that prefix's last one,
        so a blank must come in between (only r_b counts). May be a view: callers do not write to it."""
        rb = self._hist_b[lo:hi, col]
        return rb if repeat else np.logaddexp(self._hist_n[lo:hi, col], rb)

    def entry(self, lo: int, hi: int, repeat: bool) -> np.ndarray:
        """log prob of being ready to emit a next token after this prefix, at frame t - 1, for t in [lo, hi)."""
        return self._ready(1, lo, hi, repeat)

    def prefix_score(self, logp: np.ndarray, blank: int, n: int) -> float:
        """log psi(self, n): the CTC output of frames [0, n) starts with this prefix."""
        if self.is_root:
            return 0.0
        self.extend(logp, blank, n)
        ready = self._ready(0, 0, n, bool(self._same[-1]))
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
