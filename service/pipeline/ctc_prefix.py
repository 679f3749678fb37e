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
moves, every prefix of a hypothesis needs the new frames, so each hypothesis advances the
variables of all its prefixes together: a few frames at a time with one vector operation
over the prefixes per frame, many frames one prefix at a time in closed form (one
cumulative sum and one logaddexp.accumulate).

Only the frames since about where a hypothesis's last token was emitted count. Before that its
prefix cannot yet be complete: the forward variables there lie more than ``LIVE_MARGIN`` (in log)
below their largest value, and the scores are sums over frames, so those terms are below float64's
resolution. The beam keeps the first frame that still counts (``lo``) and works on [lo, T) only: a
decoding step costs the same 30 s into a segment as at its start, where summing from frame 0 made
the cost of a step grow with the segment and the segment's cost quadratic.

The whole beam is one ``CtcBeam``: the active hypotheses of the windowed decoder always
hold the same number of tokens (each step adds one to every survivor), so their variables
stack into (P, ...) arrays and every operation runs once per decoding step, not once per
hypothesis. With arrays this small numpy's per-call overhead, not arithmetic, is the cost.
"""
from __future__ import annotations

import numpy as np

# Service default for the joint weight: lowest dev WER of 0/0.3/0.5/0.7 (docs/BENCHMARKS.md, "Joint CTC/attention weight").
DEFAULT_CTC_WEIGHT = 0.3
NEG_INF = -np.inf
SCORE_FLOOR = -1.0e3
_HEADROOM = 16  # spare history frames: a window advances a few frames per decoding step
# Frames whose forward variables lie this far (log) below the row's largest are dropped from the sums:
# e^-60 is 1e-26 relative, and a sum has at most a few thousand such terms, so far below float64's 1e-16.
LIVE_MARGIN = 60.0


def _recurrence(init: np.ndarray | None, a: np.ndarray, p: np.ndarray) -> np.ndarray:
    """x[:, k] = logaddexp(x[:, k-1], a[:, k]) + p[:, k] for k in [0, D), x[:, -1] = init.

    init (P,) or None for -inf (nothing before); a (P, D), p (P, D) or (D,) shared by every
    row, float64 -> (P, D). With L = cumsum(p), y = x - L obeys y[k] = logaddexp(y[k-1],
    a[k] - L[k-1]): one cumulative sum and one accumulate.
    """
    cum = np.cumsum(p, axis=-1)
    shifted = a - np.concatenate([np.zeros(cum.shape[:-1] + (1,)), cum[..., :-1]], axis=-1)
    if init is None:  # logaddexp(-inf, v) is exactly v: start the accumulation at the first frame
        return np.logaddexp.accumulate(shifted, axis=1) + cum
    y = np.logaddexp.accumulate(np.concatenate([init[:, None], shifted], axis=1), axis=1)[:, 1:]
    return y + cum


class CtcBeam:
    """CTC forward variables of P prefixes of equal length L, one row per hypothesis.

    Extending to new frames needs every shorter prefix of a row too (column l: its first l
    tokens; column 0: the empty prefix), but only at the latest frame: the frontier
    ``front_n``, ``front_b`` (P, L + 1). The scores need the full history of two prefixes
    only, the row's own and its parent's: ``own_n``, ``own_b``, ``par_n``, ``par_b``
    (P, 1 + capacity), where [:, t + 1] is after frame t and [:, 0] before frame 0. So the
    beam holds O(P (L + T)) numbers; a child row copies its parent's frontier and own
    history (now its parent column) and adds its own row.

    Every row is computed up to the same frame ``n``: the furthest any row has needed. Rows
    whose window ends earlier get a few frames more than they use, which costs less than
    tracking each row's own frame, and the values up to a frame never depend on later ones.
    History columns before ``lo`` (shared by the rows) no longer count: a child computes its own
    row from there (-inf before), and the scores sum from there.
    """

    def __init__(self, labels: np.ndarray, same: np.ndarray, n: int, front_n: np.ndarray, front_b: np.ndarray,
                 own_n: np.ndarray, own_b: np.ndarray, par_n: np.ndarray, par_b: np.ndarray, lo: int = 0) -> None:
        self.labels = labels  # (P, L) int64 the prefixes
        self.same = same  # (P, L) token l repeats token l - 1: a blank must come between
        self.n = n  # frames computed
        self.front_n, self.front_b = front_n, front_b
        self.own_n, self.own_b, self.par_n, self.par_b = own_n, own_b, par_n, par_b
        self.lo = lo  # first history column that counts (column t: before frame t)

    @classmethod
    def root(cls, rows: int = 1) -> "CtcBeam":
        """`rows` empty prefixes before frame 0: only the empty prefix is complete (r_b = log 1)."""
        own_n, own_b = _history(rows, _HEADROOM), _history(rows, _HEADROOM)
        own_b[:, 0] = 0.0
        return cls(np.zeros((rows, 0), np.int64), np.zeros((rows, 0), bool), 0, np.full((rows, 1), NEG_INF),
                   np.zeros((rows, 1)), own_n, own_b, _history(rows, _HEADROOM), _history(rows, _HEADROOM))

    @property
    def rows(self) -> int:
        return len(self.labels)

    @property
    def length(self) -> int:
        """L: tokens per prefix."""
        return self.labels.shape[1]

    def r_n(self, row: int) -> np.ndarray:
        """(n,) log prob of frames [0, t] emitting exactly the row's prefix, ending in its last token."""
        return self.own_n[row, 1: self.n + 1]

    def r_b(self, row: int) -> np.ndarray:
        """(n,) the same, ending in blank."""
        return self.own_b[row, 1: self.n + 1]

    def select(self, parents: np.ndarray, tokens: np.ndarray, logp: np.ndarray, blank: int) -> "CtcBeam":
        """The next step's beam: row i is row parents[i] extended by tokens[i] (not blank).

        parents, tokens (S,) int; logp (T', V) the segment's CTC log-probs, T' >= n. The
        children's own rows are computed over the frames [lo, n) the parents have.
        """
        n, rows, lo = self.n, len(parents), self.lo
        last = self.labels[parents, -1] if self.length else np.full(rows, -1)
        repeat = tokens == last
        par_n, par_b = self.own_n[parents], self.own_b[parents]  # fancy indexing: copies
        own_n, own_b = _history(rows, par_n.shape[1] - 1), _history(rows, par_n.shape[1] - 1)  # a token needs a frame
        if n > lo:
            ready = _ready(par_n[:, lo:n], par_b[:, lo:n], repeat)  # the parent complete before frame t
            own_n[:, lo + 1: n + 1] = _recurrence(None, ready, logp[lo:n, tokens].T.astype(np.float64))
            own_b[:, lo + 1: n + 1] = _recurrence(None, own_n[:, lo:n], logp[lo:n, blank].astype(np.float64))
        beam = CtcBeam(np.concatenate([self.labels[parents], tokens[:, None]], axis=1),
                       np.concatenate([self.same[parents], repeat[:, None]], axis=1), n,
                       np.concatenate([self.front_n[parents], own_n[:, n: n + 1]], axis=1),
                       np.concatenate([self.front_b[parents], own_b[:, n: n + 1]], axis=1),
                       own_n, own_b, par_n, par_b, lo)
        beam._advance_lo()
        return beam

    def _advance_lo(self) -> None:
        """Move ``lo`` to one column before the first where some row's forward variables come within
        LIVE_MARGIN of that row's largest (rows that cannot hold their prefix do not count)."""
        n, lo = self.n, self.lo
        if n <= lo:
            return
        entry = np.logaddexp(self.own_n[:, lo: n + 1], self.own_b[:, lo: n + 1])  # (P, n + 1 - lo)
        top = entry.max(axis=1, keepdims=True)
        live = (entry >= top - LIVE_MARGIN) & np.isfinite(top)
        if live.any():
            self.lo = lo + max(0, int(np.argmax(live.any(axis=0))) - 1)

    def extend(self, logp: np.ndarray, blank: int, n: int) -> None:
        """Forward variables up to frame n. logp (T', V) the segment's CTC log-probs, T' >= n."""
        if n <= self.n:
            return
        self._reserve(n)
        if n - self.n > self.length + 1:
            self._extend_rows(logp, blank, n)
        else:
            self._extend_frames(logp, blank, n)
        self.n = n

    def scores(self, logp: np.ndarray, blank: int, bounds: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CTC log-probs of each row's next token given its prefix, over frames [0, bounds[row]).

        bounds (P,) >= 1; tokens (P, C) candidate ids per row (blank or eos columns give
        meaningless values) -> ((P, C) log psi(h + c) - log psi(h), (P,) log P(output == h) -
        log psi(h) for ending here). Rows whose prefix the frames cannot hold (psi(h) = 0)
        already have more tokens than CTC allows: every further token gets the floor and the
        end gets 0, so such a hypothesis can only end.
        """
        frames = int(bounds.max())
        self.extend(logp, blank, frames)
        lo = min(self.lo, frames - 1)
        valid = None if bounds.min() == frames else np.arange(lo, frames) < bounds[:, None]  # (P, frames - lo)
        own = self._own_scores(logp, lo, frames, valid)
        possible = np.isfinite(own)
        own = np.where(possible, own, 0.0)
        entry = np.logaddexp(self.own_n[:, lo:frames], self.own_b[:, lo:frames])
        if valid is not None:
            entry = np.where(valid, entry, NEG_INF)
        # psi(h + c) = sum over t of P(h complete before t) p_c(t): a sum of products, taken in
        # probability space with each row's largest term scaled to 1 (one exp per number, where a
        # log-domain reduction costs a log and an exp per pair)
        top = _row_max(entry)  # (P, 1)
        probs = np.exp(logp[lo:frames][:, tokens].astype(np.float64))  # (frames - lo, P, C)
        with np.errstate(divide="ignore"):  # log(0) = -inf: floored below
            psi = np.log(np.einsum("pt,tpc->pc", np.exp(entry - top), probs)) + top
        if self.length:
            repeat = tokens == self.labels[:, -1:]
            if repeat.any():  # a repeated token needs a blank in between
                after_blank = self.own_b[:, lo:frames] + logp[lo:frames, self.labels[:, -1]].T
                if valid is not None:
                    after_blank = np.where(valid, after_blank, NEG_INF)
                psi = np.where(repeat, _logsumexp_rows(after_blank)[:, None], psi)
        rows = np.arange(self.rows)
        end = np.logaddexp(self.own_n[rows, bounds], self.own_b[rows, bounds])
        # a floor keeps impossible continuations finite, so scores never become nan
        deltas = np.where(possible[:, None], np.maximum(psi - own[:, None], SCORE_FLOOR), SCORE_FLOOR)
        return deltas, np.where(possible, np.maximum(end - own, SCORE_FLOOR), 0.0)

    def prefix_scores(self, logp: np.ndarray, blank: int, bounds: np.ndarray) -> np.ndarray:
        """(P,) log psi(h, bounds[row]): the CTC output of those frames starts with the row's prefix."""
        frames = int(bounds.max())
        self.extend(logp, blank, frames)
        lo = min(self.lo, frames - 1)
        return self._own_scores(logp, lo, frames, np.arange(lo, frames) < bounds[:, None])

    def end_scores(self, logp: np.ndarray, blank: int, rows: list[int]) -> np.ndarray:
        """(len(rows),) log P(output == h) - log psi(h) over the whole segment, logp (T', V)."""
        _, rest = self.scores(logp, blank, np.full(self.rows, len(logp)), np.zeros((self.rows, 0), np.int64))
        return rest[rows]

    def next_token_frame(self, row: int, logp: np.ndarray, blank: int) -> int:
        """Encoder frame where CTC most likely emits the token after the row's prefix: the
        median of its first-emission time over the whole segment, logp (T', V)."""
        n = len(logp)
        self.extend(logp, blank, n)
        lo = min(self.lo, n - 1)
        probs = np.exp(logp[lo:].astype(np.float64))
        other = 1.0 - probs[:, blank] - (probs[:, self.labels[row, -1]] if self.length else 0.0)
        entry = np.logaddexp(self.own_n[row, lo:n], self.own_b[row, lo:n])
        first_emit = entry + np.log(np.maximum(other, 1e-12))
        top = first_emit.max()
        if not np.isfinite(top):
            return 0  # the frames cannot hold the prefix: no frame to jump to (callers jump forward only)
        mass = np.cumsum(np.exp(first_emit - top))
        return lo + int(np.searchsorted(mass, mass[-1] / 2))

    def _own_scores(self, logp: np.ndarray, lo: int, frames: int, valid: np.ndarray | None) -> np.ndarray:
        """(P,) log psi(h) over frames [lo, frames) where valid (P, frames - lo) (None: all):
        the parent complete, then h's last token."""
        if not self.length:
            return np.zeros(self.rows)
        ready = _ready(self.par_n[:, lo:frames], self.par_b[:, lo:frames], self.same[:, -1])
        paths = ready + logp[lo:frames, self.labels[:, -1]].T
        if valid is not None:
            paths = np.where(valid, paths, NEG_INF)
        return _logsumexp_rows(paths)

    def _reserve(self, frames: int) -> None:
        capacity = self.own_n.shape[1] - 1
        if frames <= capacity:
            return
        grown = max(frames + _HEADROOM, 2 * capacity)
        for name in ("own_n", "own_b", "par_n", "par_b"):
            old = getattr(self, name)
            new = _history(self.rows, grown)
            new[:, : old.shape[1]] = old
            setattr(self, name, new)

    def _extend_frames(self, logp: np.ndarray, blank: int, n: int) -> None:
        """Frame by frame, all prefixes of all rows at once: the frontier at t from the frontier at t - 1."""
        t0, length = self.n, self.length
        lp_tok = logp[t0:n][:, self.labels]  # (D, P, L)
        lp_blank = logp[t0:n, blank].tolist()
        keep = min(2, length + 1)  # history columns: the row's own prefix and (L >= 1) its parent's
        kept_n, kept_b = np.empty((self.rows, n - t0, keep)), np.empty((self.rows, n - t0, keep))
        prev_n, prev_b = self.front_n, self.front_b
        for d in range(n - t0):
            either = np.logaddexp(prev_n, prev_b)  # complete after frame t - 1, ending either way
            new_n = np.empty_like(prev_n)
            new_n[:, 0] = NEG_INF
            if length:
                ready = np.where(self.same, prev_b[:, :-1], either[:, :-1])
                np.logaddexp(prev_n[:, 1:], ready, out=new_n[:, 1:])
                new_n[:, 1:] += lp_tok[d]
            prev_n, prev_b = new_n, either + lp_blank[d]
            kept_n[:, d], kept_b[:, d] = prev_n[:, -keep:], prev_b[:, -keep:]
        self.front_n, self.front_b = prev_n, prev_b
        self.own_n[:, t0 + 1: n + 1], self.own_b[:, t0 + 1: n + 1] = kept_n[:, :, -1], kept_b[:, :, -1]
        if length:
            self.par_n[:, t0 + 1: n + 1], self.par_b[:, t0 + 1: n + 1] = kept_n[:, :, 0], kept_b[:, :, 0]

    def _extend_rows(self, logp: np.ndarray, blank: int, n: int) -> None:
        """Prefix by prefix, each in closed form over frames [n_old, n) for all rows at once."""
        t0, length = self.n, self.length
        lp_blank = logp[t0:n, blank].astype(np.float64)  # (n - t0,) the same for every row
        front_n, front_b = np.empty_like(self.front_n), np.empty_like(self.front_b)
        row_n = row_b = None
        for col in range(length + 1):
            if col == 0:  # the empty prefix: only blanks, never ends in a token
                row_n = np.full((self.rows, n - t0), NEG_INF)
                row_b = self.front_b[:, :1] + np.cumsum(lp_blank)
            else:
                # readiness of the prefix one shorter at t - 1, for t in [t0, n)
                above_n = np.concatenate([self.front_n[:, col - 1: col], row_n[:, :-1]], axis=1)
                above_b = np.concatenate([self.front_b[:, col - 1: col], row_b[:, :-1]], axis=1)
                entry = _ready(above_n, above_b, self.same[:, col - 1])
                row_n = _recurrence(self.front_n[:, col], entry,
                                    logp[t0:n][:, self.labels[:, col - 1]].T.astype(np.float64))
                own_before = np.concatenate([self.front_n[:, col: col + 1], row_n[:, :-1]], axis=1)
                row_b = _recurrence(self.front_b[:, col], own_before, lp_blank)
            if col == length:
                self.own_n[:, t0 + 1: n + 1], self.own_b[:, t0 + 1: n + 1] = row_n, row_b
            elif col == length - 1:
                self.par_n[:, t0 + 1: n + 1], self.par_b[:, t0 + 1: n + 1] = row_n, row_b
            front_n[:, col], front_b[:, col] = row_n[:, -1], row_b[:, -1]
        self.front_n, self.front_b = front_n, front_b


def _history(rows: int, frames: int) -> np.ndarray:
    """(rows, 1 + frames) history, -inf: nothing is possible until computed."""
    return np.full((rows, frames + 1), NEG_INF)


def _row_max(x: np.ndarray) -> np.ndarray:
    """(P, D) -> (P, 1) each row's maximum, 0 for a row of -inf (so that x - max stays -inf, not nan)."""
    top = x.max(axis=1, keepdims=True)
    return np.where(np.isfinite(top), top, 0.0)


def _logsumexp_rows(x: np.ndarray) -> np.ndarray:
    """(P, D) log-probs -> (P,) log of each row's sum; -inf for a row of -inf."""
    top = _row_max(x)
    with np.errstate(divide="ignore"):  # log(0) = -inf: the row is impossible
        return np.log(np.exp(x - top).sum(axis=1)) + top[:, 0]


def _ready(hist_n: np.ndarray, hist_b: np.ndarray, repeat: np.ndarray) -> np.ndarray:
    """log prob that a prefix is complete, from its (P, D) histories. `repeat` (P,): the next token
    equals the prefix's last one, so a blank must come in between (only r_b counts)."""
    return np.where(repeat[:, None], hist_b, np.logaddexp(hist_n, hist_b))
