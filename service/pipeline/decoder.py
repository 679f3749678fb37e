"""Monotonic windowed attention decoding (DESIGN §3) over the one-step decoder.onnx.

Per hypothesis we keep a window centre m (encoder frame, starts at 0). A step attends
only to frames [m - B, m - B + W); afterwards m = max(m, argmax a). A step runs only
when every active hypothesis has its whole window encoded, or the segment has ended.
Because a step never runs on a partial window, the same frames always produce the
same decisions: streaming under any chunking equals offline decoding of the segment.

`WindowedDecoder` is a state machine: `next_step()` says what to compute (or None:
wait for audio / done), `apply()` takes the graph's outputs. The drivers that run the
graph (a plain call offline, a micro-batched await in the service) stay tiny and the
decoding rule exists once. Beam size 1 is greedy decoding.

With `ctc_weight` > 0 each candidate token is scored jointly: (1 - w) attention log-prob
+ w CTC prefix log-prob (service/pipeline/ctc_prefix.py) over the frames up to the end
of the step's window, so joint decoding streams exactly like attention-only decoding.
With a language model (service/pipeline/lm.py) each candidate also gets `lm_weight` times
the LM's log-prob of the token (or of the end) given the hypothesis's tokens.

Ending is the one decision the window cannot make: the attention decoder often proposes
the end in a pause mid-sentence, and frames up to the window end cannot say whether more
speech follows. So when an end would make the beam, the step is decided with CTC's exact
score for "the output is complete" over the whole segment, which exists only once the
segment has ended: a streaming decoder holds that step (partials pause) until then.
When CTC rejects the end, the window sits over a pause, so it jumps forward to where
CTC expects the next token and the step runs again there (`_decide_end`). Offline
decoding applies the same rule with the segment already complete, so streaming still
equals offline.

A segment of continuous speech holds several sentences: the attention proposes the end in
every pause between them, and holding each such step until the segment ends stopped the
partials at the first sentence for the rest of the segment (12 s on average, up to 30 s).
So a held step is also settled before the segment ends, as soon as CTC hears speech after
every pending row's window (a frame where blank has less than 1/2): speech follows, so none
of those ends stands, and the windows jump to it, placed from the frames up to
`NEXT_SPEECH_CONTEXT` frames past the latest such frame. Until CTC hears speech there, the
step waits for the segment end as before. Both rules read the frames alone, and offline
decoding applies them the same way, so streaming still equals offline.

The first window starts where speech does. A segment opens on silence of any length (the
VAD's pre-roll, a caller's lead-in), and a first window [-B, W - B) that holds no speech
makes the decoder guess its first token from silence ("i open the door"). So the first
step waits for the first frame where CTC gives non-blank a probability of at least 1/2,
and centres its window `FIRST_WINDOW_LEAD` frames before it (at 0 when that is earlier,
or when the segment ends with no such frame). The frame is found in the frames alone, so
streaming still equals offline.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from service.pipeline.ctc_prefix import SCORE_FLOOR, CtcBeam
from service.pipeline.lm import LM_C_IN, LM_H_IN

if TYPE_CHECKING:  # numpy only at run time: the service's configuration imports this module's defaults
    from service.pipeline.encoder import FrameStore
    from service.pipeline.lm import LmGraph, LmInfo
    from service.pipeline.model_info import ModelInfo

MASK_VALUE = -1.0e4  # same additive mask as training
# Service default beam: dev WER of v1.7.0 (prose / conversational) with beam 4/6/8/12/16 was
# 60.5/31.8, 58.9/29.9, 58.2/29.2, 57.6/28.2, 57.4/28.0 %, for a decoder 1.3-1.5x (beam 8) to 3.3x (16) as
# costly as beam 4 (docs/BENCHMARKS.md, "Decoding rule and beam width"; v1.2.0 had its best WER at beam 4).
DEFAULT_BEAM_SIZE = 8
# Service default score pruning: on the 600 dev utterances at beam 4, thresholds 3 and 2 gave 69.75 / 69.70 %
# WER against 69.89 % without, for 0.85-0.95x the decoder's CPU; 1 loses 3 points, 6 saves nothing
# measurable (docs/BENCHMARKS.md, "Beam threshold").
DEFAULT_BEAM_THRESHOLD = 3.0
# The first window's centre goes this many encoder frames (40 ms) before CTC's first non-blank frame:
# CTC fires inside or after the sound it names, so the word's onset falls at or after the centre.
FIRST_WINDOW_LEAD = 4
# A held end rejected because speech follows: frames read past the first speech frame to place the
# next window (CTC's first-emission estimate of the next token needs a little context after it).
NEXT_SPEECH_CONTEXT = 4
_HALF = float(np.log(0.5))


@dataclass(frozen=True)
class DecodeOptions:
    beam_size: int | None = 1  # hypotheses kept per step; 1: greedy; None: the service default
    min_beam_size: int = 1  # the caller wants this many alternatives: a server default beam never goes below it
    max_tokens_per_frame: float | None = None  # budget against runaway loops; None: the model's own (metadata)
    token_budget_slack: int = 8
    length_norm: bool = True
    return_attention: bool = False  # keep the alignment matrix for the client (word times use it regardless)
    ctc_weight: float | None = None  # joint CTC/attention scoring; 0: attention only; None: the service default
    ctc_candidates: int = 8  # attention's top tokens per hypothesis that CTC rescores
    # drop candidates more than this (log-prob) below the step's best; 0: off; None: the service default
    beam_threshold: float | None = None
    lm_weight: float | None = None  # shallow fusion with the model's LM; 0: off; None: the service default
    # (Recognizer.new_segment resolves None, as for ctc_weight; a bare WindowedDecoder reads None as 0)


@dataclass
class Hyp:
    """One decoding hypothesis; `att` is its last attention row in window coordinates."""

    tokens: list[int]
    logps: list[float]
    h: np.ndarray  # (dec_hidden,)
    c: np.ndarray  # (dec_hidden,)
    att: np.ndarray  # (W,) weights over the window starting at att_start
    att_start: int  # absolute encoder frame of att[0]
    centre: int  # window centre m
    align: list[tuple[int, np.ndarray]] = field(default_factory=list)  # per token: (window start, (W,) weights)
    finished: bool = False
    score: float = 0.0  # ranking score: sum of attention log-probs, or of joint scores with CTC
    lm_h: np.ndarray | None = None  # (lm_hidden,) LM state after <sos> + tokens[:-1]; the next step feeds tokens[-1]
    lm_c: np.ndarray | None = None

    def ranking(self, length_norm: bool) -> float:
        return self.score / (len(self.logps) or 1) if length_norm else self.score

    def window_start(self, back: int) -> int:
        return self.centre - back

    def recentre(self, centre: int, back: int, size: int) -> None:
        """Move the window to `centre` with a one-hot attention there, as at a segment's start."""
        self.centre, self.att_start = centre, centre - back
        self.att = np.zeros(size, np.float32)
        self.att[back] = 1.0


@dataclass
class StepRequest:
    """Inputs for one decoder.onnx call over the active hypotheses (batch K)."""

    inputs: dict[str, np.ndarray]
    starts: list[int]  # window start per row
    bounds: list[int] = field(default_factory=list)  # per row: CTC scores count frames [0, bound)
    ctc_logp: np.ndarray | None = None  # (T', V) the segment's CTC log-probs (joint decoding only)
    ended: bool = True  # the segment is complete: ctc_logp holds all of its frames


@dataclass
class _Candidate:
    score: float  # hypothesis score after this token
    row: int
    token: int
    end_pending: bool = False  # an end scored from the window only: needs the whole segment


class WindowedDecoder:
    """Per-segment decoding state. The shared graph/session is not held here."""

    def __init__(self, info: ModelInfo, options: DecodeOptions = DecodeOptions(), lm: LmInfo | None = None) -> None:
        if options.beam_size is None:
            options = dataclasses.replace(options, beam_size=max(DEFAULT_BEAM_SIZE, options.min_beam_size))
        if options.beam_threshold is None:
            options = dataclasses.replace(options, beam_threshold=DEFAULT_BEAM_THRESHOLD)
        self.info = info
        self.options = options
        self.eos = info.vocab.index("<sos/eos>")
        self.blank = info.vocab.index("<blank>") if "<blank>" in info.vocab else -1
        zero = np.zeros(info.dec_hidden, np.float32)
        self.lm_weight = (options.lm_weight or 0.0) if lm is not None else 0.0
        lm_zero = np.zeros(lm.hidden, np.float32) if self.lm_weight > 0 else None
        root = Hyp([], [], zero, zero.copy(), np.zeros(0, np.float32), 0, 0,
                   lm_h=lm_zero, lm_c=None if lm_zero is None else lm_zero.copy())
        root.recentre(0, info.window_back, info.window_size)  # training starts from a one-hot at frame 0
        self.active: list[Hyp] = [root]
        # CTC forward variables of the active hypotheses, row i for active[i] (joint decoding only)
        self._ctc = CtcBeam.root() if (options.ctc_weight or 0.0) > 0 and self.blank >= 0 else None
        self.finished: list[Hyp] = []
        self._held: tuple[StepRequest, dict[str, np.ndarray], list[_Candidate]] | None = None
        self._onset_scanned: int | None = 0  # frames searched for CTC's first non-blank; None: placed

    @property
    def done(self) -> bool:
        return not self.active

    @property
    def holding_end(self) -> bool:
        """A step waits for the segment's end to decide whether the output ends there."""
        return self._held is not None

    def token_budget(self, n_frames: int) -> int:
        per_frame = self.options.max_tokens_per_frame or self.info.max_tokens_per_frame
        return int(per_frame * n_frames) + self.options.token_budget_slack

    def next_step(self, store: FrameStore, ended: bool) -> StepRequest | None:
        """The next decoder call if the rule of DESIGN §3 allows one now, else None."""
        if self._held is not None and not self._settle_held(store.ctc_logp(), ended):
            return None  # an end decision needs more frames
        if not self.active:
            return None
        back, w = self.info.window_back, self.info.window_size
        if ended and (store.length == 0 or len(self.active[0].tokens) >= self.token_budget(store.length)):
            self._finish_active()
            return None
        if self._onset_scanned is not None and not self._place_first_window(store, ended):
            return None  # no speech in the frames so far: wait for more audio
        if not ended:
            needed = max(h.window_start(back) + w for h in self.active)
            if needed > store.length or len(self.active[0].tokens) >= self.token_budget(store.length):
                return None  # wait for audio
        starts = [h.window_start(back) for h in self.active]
        frames, keys, valid = store.windows(np.array(starts), w)
        inputs = {"token": np.array([h.tokens[-1] if h.tokens else self.eos for h in self.active], np.int64),
                  "h": np.stack([h.h for h in self.active]), "c": np.stack([h.c for h in self.active]),
                  "att_prev": np.stack([shift_window(h.att, s - h.att_start) for h, s in zip(self.active, starts)]) * valid,
                  "enc": frames, "keys": keys, "mask": np.where(valid, 0.0, MASK_VALUE).astype(np.float32)}
        if self.lm_weight > 0:  # the LM's state for the same rows: run_step runs its step too
            inputs[LM_H_IN] = np.stack([h.lm_h for h in self.active])
            inputs[LM_C_IN] = np.stack([h.lm_c for h in self.active])
        if self._ctc is None:
            return StepRequest(inputs, starts)
        # the window end, not store.length: what has arrived depends on the chunking
        return StepRequest(inputs, starts, [min(s + w, store.length) for s in starts], store.ctc_logp(), ended)

    def _place_first_window(self, store: FrameStore, ended: bool) -> bool:
        """Centre the first window before CTC's first non-blank frame; False: none yet, wait."""
        if self.blank < 0:  # a model without a CTC head keeps the window at the segment start
            self._onset_scanned = None
            return True
        new = store.ctc_logp()[self._onset_scanned:, self.blank]  # (T' - scanned,) log P(blank)
        speech = np.flatnonzero(new <= _HALF)
        if not len(speech):
            self._onset_scanned = store.length
            if not ended:
                return False
            centre = 0
        else:
            centre = max(0, self._onset_scanned + int(speech[0]) - FIRST_WINDOW_LEAD)
        self.active[0].recentre(centre, self.info.window_back, self.info.window_size)  # the one hypothesis
        self._onset_scanned = None
        return True

    def apply(self, request: StepRequest, outputs: dict[str, np.ndarray]) -> None:
        """Expand every active hypothesis with the graph's log-probs; keep the best `beam_size`.

        If an end scored from the window alone would make the beam, the step waits for the
        segment's end (held until `next_step(..., ended=True)`), then ends are scored exactly.
        """
        k = self.options.beam_size
        logp = outputs["logp"]
        w = self.options.ctc_weight if self._ctc is not None else 0.0
        # candidates: the best tokens by the scores known for the whole vocabulary (attention, LM);
        # CTC then rescores only those few
        pre = logp if self.lm_weight == 0 else (1 - w) * logp + self.lm_weight * outputs["lm_logp"]
        joint = self._ctc is not None
        # one sort for all rows (the same per-row order as sorting each row)
        # (at least 2 with CTC: the end may take the last column below, never the only one)
        tops = np.argsort(-pre, axis=1)[:, :max(k, self.options.ctc_candidates, 2) if joint else k]
        if joint:
            # per row: the window reaches past the segment end, where CTC scores the end exactly
            exact = np.array(request.starts) + self.info.window_size > len(request.ctc_logp)  # (P,)
            # A segment cut mid-speech (length limit, forced end, stream end) leaves the attention
            # expecting more words: its end probability ranks far below the top few, so without
            # this the end would never be scored and the decoder would babble to its token budget.
            tops[exact & ~(tops == self.eos).any(axis=1), -1] = self.eos
        att = np.take_along_axis(logp, tops, axis=1)  # (P, C)
        if joint:
            ctc = self._ctc_scores(tops, att, request, exact)
            step_scores = (1 - w) * att + w * ctc
            pending = (tops == self.eos) & ~exact[:, None]
        else:
            step_scores = att.astype(np.float64)
            pending = np.zeros(tops.shape, bool)
        if self.lm_weight > 0:
            step_scores = step_scores + self.lm_weight * np.take_along_axis(outputs["lm_logp"], tops, axis=1)
        totals = (np.array([h.score for h in self.active])[:, None] + step_scores).ravel()
        # best first; a stable sort keeps ties in row order, as the per-row lists it replaced did
        order = np.argsort(-totals, kind="stable")
        held = bool(pending.ravel()[order[:k]].any())
        if not held:  # _select takes at most k survivors and one end per row (rows <= k)
            order = order[:2 * k]
        rows = order // tops.shape[1]
        candidates = [_Candidate(s, r, t, p) for s, r, t, p in
                      zip(totals[order].tolist(), rows.tolist(), tops.ravel()[order].tolist(), pending.ravel()[order].tolist())]
        if held:
            self._held = (request, outputs, candidates)
            if request.ended:
                self._settle_held(request.ctc_logp, ended=True)
            return
        self._select(candidates, request, outputs)

    def _settle_held(self, ctc_logp: np.ndarray, ended: bool) -> bool:
        """Decide the held step if the frames so far, ctc_logp (T', V), allow it; False: hold on.

        Early, once CTC has heard speech after every pending row's window and NEXT_SPEECH_CONTEXT
        frames past the latest of those first speech frames exist; else exactly, once the segment
        has ended. Which rule applies depends on the frames alone (offline decoding, with all of
        them, takes the same branch as streaming).
        """
        request, outputs, candidates = self._held
        heard = 0  # frames the early decision reads
        for row in sorted({c.row for c in candidates if c.end_pending}):
            speech = np.flatnonzero(ctc_logp[request.bounds[row]:, self.blank] <= _HALF)
            if not len(speech):
                heard = None
                break
            heard = max(heard, request.bounds[row] + int(speech[0]) + 1 + NEXT_SPEECH_CONTEXT)
        if heard is not None and len(ctc_logp) >= heard:
            self._held = None
            self._decide_end(candidates, request, outputs, ctc_logp, heard)
            return True
        if not ended:
            return False
        self._held = None
        self._decide_end(candidates, request, outputs, ctc_logp)
        return True

    def _decide_end(self, candidates: list[_Candidate], request: StepRequest, outputs: dict[str, np.ndarray],
                    ctc_logp: np.ndarray, heard: int | None = None) -> None:
        """Settle a step whose end needs more than the window, with (T', V) CTC log-probs: the whole
        segment's (heard None: ends are rescored by CTC), or frames [0, heard) in which speech follows
        every pending end (none of those ends stands; later frames, when ctc_logp has them, are not read).

        If CTC rejects the end (speech follows), the attention's window is over a pause and
        its content candidates are guesses from silence. So the hypothesis's window jumps
        forward to where CTC expects the next token and the step is run again there. Each
        jump moves a window centre strictly forward, so this terminates; with nowhere to
        jump, the rescored candidates are kept.
        """
        if heard is None:
            rescored = self._exact_ends(candidates, request, outputs, ctc_logp)
        else:
            rescored = [c for c in candidates if not c.end_pending]
        kept_ends = {c.row for c in rescored[:self.options.beam_size] if c.token == self.eos}
        jumped = False
        for row in sorted({c.row for c in candidates if c.end_pending} - kept_ends):
            hyp = self.active[row]
            frame = self._ctc.next_token_frame(row, ctc_logp[:heard], self.blank) - self.info.window_back // 2
            if frame > hyp.centre:
                hyp.recentre(frame, self.info.window_back, self.info.window_size)
                jumped = True
        if not jumped:
            self._select(rescored, request, outputs, ctc_logp)
        # else: the step is discarded; next_step() asks again from the moved windows

    def _exact_ends(self, candidates: list[_Candidate], request: StepRequest, outputs: dict[str, np.ndarray],
                    ctc_logp: np.ndarray) -> list[_Candidate]:
        """Re-score window-only ends with CTC's P(output complete) over the whole segment, ctc_logp (T', V)."""
        w = self.options.ctc_weight
        pending_rows = sorted({c.row for c in candidates if c.end_pending})
        rests = dict(zip(pending_rows, self._ctc.end_scores(ctc_logp, self.blank, pending_rows).tolist()))
        out = []
        for c in candidates:
            if c.end_pending:
                hyp, rest = self.active[c.row], rests[c.row]
                lm = self.lm_weight * float(outputs["lm_logp"][c.row, self.eos]) if self.lm_weight > 0 else 0.0
                c = _Candidate(hyp.score + (1 - w) * float(outputs["logp"][c.row, self.eos]) + w * rest + lm,
                               c.row, c.token)
            out.append(c)
        return sorted(out, key=lambda c: -c.score)

    def _select(self, candidates: list[_Candidate], request: StepRequest, outputs: dict[str, np.ndarray],
                ctc_logp: np.ndarray | None = None) -> None:
        """Keep the best candidates; ctc_logp (T', V): the CTC log-probs that cover every active
        hypothesis's computed frames (the request's, or the whole segment's after an end decision)."""
        k = self.options.beam_size
        logp, att = outputs["logp"], outputs["att"]
        # score pruning: a hypothesis this far behind the best rarely recovers, and each costs a decoder
        # row and its CTC prefix scores next step (the best candidate always survives)
        threshold = self.options.beam_threshold
        floor = candidates[0].score - threshold if threshold else -np.inf
        survivors: list[Hyp] = []
        parents: list[int] = []
        for cand in candidates:
            if len(survivors) >= k or cand.score < floor:
                break
            row, token = cand.row, cand.token
            parent, start = self.active[row], request.starts[row]
            weights = att[row].astype(np.float32)
            child = Hyp(parent.tokens + [token], parent.logps + [float(logp[row, token])],
                        outputs["new_h"][row], outputs["new_c"][row], weights, start,
                        max(parent.centre, start + int(np.argmax(weights))),
                        parent.align + [(start, weights)], score=cand.score,
                        lm_h=outputs["lm_h"][row] if self.lm_weight > 0 else None,
                        lm_c=outputs["lm_c"][row] if self.lm_weight > 0 else None)
            if token == self.eos:
                child.finished = True
                self.finished.append(child)
            else:
                survivors.append(child)
                parents.append(row)
        if self._ctc is not None and survivors:
            self._ctc = self._ctc.select(np.array(parents), np.array([h.tokens[-1] for h in survivors]),
                                         request.ctc_logp if ctc_logp is None else ctc_logp, self.blank)
        self.active = survivors
        if len(self.finished) >= k:
            self._finish_active(drop=True)

    def _ctc_scores(self, tokens: np.ndarray, att_logp: np.ndarray, request: StepRequest,
                    exact: np.ndarray) -> np.ndarray:
        """(P, C) CTC log-probs of each row's candidate tokens (for eos: of the output ending).

        CTC sees frames up to the window end only. The mass it gives to "nothing more up to
        there" (`rest`) means the next token lies beyond the window, where CTC knows nothing:
        that mass is shared out by the attention's own distribution (att_logp (P, C)). Once the
        window reaches past the segment end there is no beyond, and ending is CTC's own score.
        The mixture stays a distribution over tokens and the end. exact (P,): the row's window
        reaches past the segment end.
        """
        deltas, rest = self._ctc.scores(request.ctc_logp, self.blank, np.array(request.bounds), tokens)
        # (float32 sums as in the per-hypothesis version this replaced: same decisions, bit for bit)
        beyond = rest.astype(np.float32)[:, None] + att_logp  # (P, C)
        out = np.where(exact[:, None], deltas, np.logaddexp(deltas, beyond))
        out = np.where(tokens == self.eos, np.where(exact[:, None], rest[:, None], beyond), out)
        return np.where(tokens == self.blank, SCORE_FLOOR, out)  # blank is no output token

    def _finish_active(self, drop: bool = False) -> None:
        """End of decoding: remaining hypotheses end here (budget hit or enough finished)."""
        if not drop:
            for hyp in self.active:
                hyp.finished = True
                self.finished.append(hyp)
        self.active = []

    def nbest(self) -> list[Hyp]:
        """Finished hypotheses best first (falls back to the active ones mid-segment)."""
        pool = self.finished if self.finished else self.active
        return sorted(pool, key=lambda h: -h.ranking(self.options.length_norm))

    def partial(self) -> Hyp:
        """The current best hypothesis while decoding is still running."""
        pool = self.active or self.finished
        return max(pool, key=lambda h: h.score) if pool else self.active[0]

    def stable_length(self) -> int:
        """Tokens shared by every hypothesis the final may still come from, active or finished
        (an end accepted mid-segment, possible without CTC): they can no longer change."""
        if not self.active:
            return len(self.nbest()[0].content_tokens(self.eos)) if self.finished else 0
        first = self.active[0].tokens
        n = len(first)
        for tokens in [h.tokens for h in self.active[1:]] + [h.content_tokens(self.eos) for h in self.finished]:
            n = min(n, next((i for i, (a, b) in enumerate(zip(first, tokens)) if a != b), min(n, len(tokens))))
        return n


def _content_tokens(self: Hyp, eos: int) -> list[int]:
    return [t for t in self.tokens if t != eos]


Hyp.content_tokens = _content_tokens  # type: ignore[attr-defined]


def shift_window(att: np.ndarray, offset: int) -> np.ndarray:
    """Re-express (W,) weights in a window `offset` frames later; frames that left are dropped."""
    out = np.zeros_like(att)
    if offset >= len(att) or offset <= -len(att):
        return out
    if offset >= 0:
        out[: len(att) - offset] = att[offset:]
    else:
        out[-offset:] = att[: len(att) + offset]
    return out


def alignment_matrix(hyp: Hyp, n_frames: int, eos: int) -> np.ndarray:
    """(n_tokens, n_frames) attention weights in absolute frame coordinates (eos row dropped)."""
    rows = [(s, w) for (s, w), t in zip(hyp.align, hyp.tokens) if t != eos]
    out = np.zeros((len(rows), n_frames), np.float32)
    for i, (start, weights) in enumerate(rows):
        for j, wj in enumerate(weights):
            if 0 <= start + j < n_frames:
                out[i, start + j] = wj
    return out


class DecoderGraph:
    """Shared wrapper around the decoder session."""

    OUTPUTS = ("logp", "new_h", "new_c", "att")

    def __init__(self, session) -> None:
        self.session = session

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.OUTPUTS, self.session.run(list(self.OUTPUTS), inputs)))


def decode_offline(graph: DecoderGraph, info: ModelInfo, store: FrameStore,
                   options: DecodeOptions = DecodeOptions(), lm: LmGraph | None = None) -> WindowedDecoder:
    """Windowed decoding of a complete segment (all frames in `store`); `lm` fuses when options.lm_weight > 0."""
    dec = WindowedDecoder(info, options, lm.info if lm is not None else None)
    while (req := dec.next_step(store, ended=True)) is not None:
        dec.apply(req, run_step(graph, lm, req.inputs))
    return dec


def run_step(graph: DecoderGraph, lm: LmGraph | None, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One decoder step for K stacked hypotheses and, when `inputs` carry LM state (LM_H_IN, LM_C_IN:
    (K, H) each, added by `next_step` when the LM fuses), the LM step for the same rows: its token is
    the decoder's. The service micro-batches whole calls of this (Recognizer), so one thread-pool call
    and one batch serve both graphs."""
    if LM_H_IN not in inputs:
        return graph.run(inputs)
    lm_outputs = lm.run({"token": inputs["token"], "h": inputs[LM_H_IN], "c": inputs[LM_C_IN]})
    return {**graph.run({k: v for k, v in inputs.items() if k not in (LM_H_IN, LM_C_IN)}), **lm_outputs}
