"""The attention encoder-decoder with a CTC head: one definition for training and export.

Encoder: global mean/variance normalization -> a causal front-end that subsamples x4 (one
frame per 40 ms) -> unidirectional LSTM stack. Front-ends: "conv1d" (two Conv1d over time with
the mel bins as channels; the shipped v1.x models) or "conv2d" (two 3x3 Conv2d over time and
frequency, then a linear projection and LayerNorm: filters shared across frequency, so a
formant shifted by another voice's vocal tract hits the same filter). It runs chunk by chunk with an
explicit state and gives the same frames as a whole-utterance run.

Decoder: one LSTMCell step per output token with additive location-aware attention
(Chorowski et al. 2015): e_ij = v^T tanh(W s_{i-1} + K h_j + U (F * a_{i-1})_j), a_i =
softmax(e_i + mask), c_i = sum_j a_ij h_j, s_i = LSTM(s_{i-1}, [emb(y_{i-1}); c_i]),
p(y_i) = softmax(O [s_i; c_i]). The same `step` serves full attention (mask = padding)
and the monotonic window of DESIGN §3 (mask = outside the window).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

MASK_VALUE = -1.0e4  # additive mask: exp(-1e4) underflows to exactly 0 in float32


@dataclass
class ModelConfig:
    vocab: list[str] = field(default_factory=list)
    n_mels: int = 80
    conv_channels: int = 256
    enc_layers: int = 2
    enc_hidden: int = 320
    att_dim: int = 192
    dec_hidden: int = 320
    emb_dim: int = 64
    loc_channels: int = 16
    loc_kernel: int = 11
    window_back: int = 4  # B of DESIGN §3, encoder frames
    window_size: int = 16  # W of DESIGN §3, encoder frames (40 ms each)
    subsampling: int = 4
    dropout: float = 0.1
    enc_skip: bool = False  # residual projection conv -> encoder output (eases early CTC learning)
    frontend: str = "conv1d"  # "conv1d" | "conv2d"
    conv2d_channels: int = 32  # conv2d front-end: channels of both 3x3 convolutions

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls(**json.loads(text))


class EncoderState(NamedTuple):
    """Carried between chunks. conv caches hold the last 2 inputs (in time) of each conv layer."""

    conv1: torch.Tensor  # conv1d: (B, n_mels, 2) normalized features; conv2d: (B, 1, 2, n_mels)
    conv2: torch.Tensor  # conv1d: (B, conv_channels, 2); conv2d: (B, conv2d_channels, 2, n_mels / 2)
    h: torch.Tensor  # (enc_layers, B, enc_hidden)
    c: torch.Tensor  # (enc_layers, B, enc_hidden)


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("feat_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("feat_inv_std", torch.ones(cfg.n_mels))
        if cfg.frontend == "conv1d":
            self.conv1 = nn.Conv1d(cfg.n_mels, cfg.conv_channels, kernel_size=3, stride=2)
            self.conv2 = nn.Conv1d(cfg.conv_channels, cfg.conv_channels, kernel_size=3, stride=2)
            self.proj = None
        elif cfg.frontend == "conv2d":
            ch = cfg.conv2d_channels
            # Padded in frequency only: time is causal, its context comes from the state.
            self.conv1 = nn.Conv2d(1, ch, kernel_size=3, stride=2, padding=(0, 1))
            self.conv2 = nn.Conv2d(ch, ch, kernel_size=3, stride=2, padding=(0, 1))
            self.proj = nn.Sequential(nn.Linear(ch * self.conv2d_freqs(cfg.n_mels), cfg.conv_channels),
                                      nn.LayerNorm(cfg.conv_channels))
        else:
            raise ValueError(f"unknown frontend {cfg.frontend!r} (conv1d or conv2d)")
        self.lstm = nn.LSTM(cfg.conv_channels, cfg.enc_hidden, num_layers=cfg.enc_layers,
                            batch_first=True, dropout=cfg.dropout if cfg.enc_layers > 1 else 0.0)
        self.skip = nn.Linear(cfg.conv_channels, cfg.enc_hidden) if cfg.enc_skip else None
        self.ctc_head = nn.Linear(cfg.enc_hidden, cfg.vocab_size)
        self.key_proj = nn.Linear(cfg.enc_hidden, cfg.att_dim)

    @staticmethod
    def conv2d_freqs(n_mels: int, layers: int = 2) -> int:
        """Frequency bins after `layers` stride-2 Conv2d (kernel 3, padding 1)."""
        for _ in range(layers):
            n_mels = (n_mels - 1) // 2 + 1
        return n_mels

    def state_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of the conv1 and conv2 caches without the batch axis."""
        cfg = self.cfg
        if cfg.frontend == "conv2d":
            return (1, 2, cfg.n_mels), (cfg.conv2d_channels, 2, self.conv2d_freqs(cfg.n_mels, 1))
        return (cfg.n_mels, 2), (cfg.conv_channels, 2)

    def init_state(self, batch: int) -> EncoderState:
        p = self.conv1.weight
        s1, s2 = self.state_shapes()
        return EncoderState(
            p.new_zeros(batch, *s1), p.new_zeros(batch, *s2),
            p.new_zeros(self.cfg.enc_layers, batch, self.cfg.enc_hidden),
            p.new_zeros(self.cfg.enc_layers, batch, self.cfg.enc_hidden))

    def streaming_forward(self, feats: torch.Tensor, state: EncoderState) -> tuple[torch.Tensor, EncoderState]:
        """(B, T, n_mels) log-mel, T a multiple of 4 -> ((B, T/4, enc_hidden), new state)."""
        x = (feats - self.feat_mean) * self.feat_inv_std  # (B, T, n_mels)
        if self.proj is None:
            x = torch.cat([state.conv1, x.transpose(1, 2)], dim=2)  # (B, n_mels, 2 + T)
            new_conv1 = x[:, :, -2:]
            x = F.relu(self.conv1(x))  # (B, C, T/2)
            x = torch.cat([state.conv2, x], dim=2)
            new_conv2 = x[:, :, -2:]
            x = F.relu(self.conv2(x)).transpose(1, 2)  # (B, T/4, C)
        else:
            x = torch.cat([state.conv1, x.unsqueeze(1)], dim=2)  # (B, 1, 2 + T, n_mels)
            new_conv1 = x[:, :, -2:]
            x = F.relu(self.conv1(x))  # (B, ch, T/2, n_mels/2)
            x = torch.cat([state.conv2, x], dim=2)
            new_conv2 = x[:, :, -2:]
            x = F.relu(self.conv2(x))  # (B, ch, T/4, n_mels/4)
            x = self.proj(x.transpose(1, 2).flatten(2))  # (B, T/4, conv_channels)
        y, (h, c) = self.lstm(x, (state.h, state.c))
        if self.skip is not None:
            y = y + self.skip(x)
        return y, EncoderState(new_conv1, new_conv2, h, c)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Whole utterances: (B, T, n_mels), T a multiple of 4 -> (B, T/4, enc_hidden)."""
        y, _ = self.streaming_forward(feats, self.init_state(feats.shape[0]))
        return y

    def heads(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T', H) -> CTC log-probs (B, T', V) and attention keys (B, T', att_dim)."""
        return F.log_softmax(self.ctc_head(frames), dim=-1), self.key_proj(frames)


class DecoderState(NamedTuple):
    h: torch.Tensor  # (B, dec_hidden)
    c: torch.Tensor  # (B, dec_hidden)


class AttentionDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.query = nn.Linear(cfg.dec_hidden, cfg.att_dim, bias=False)
        self.loc_conv = nn.Conv1d(1, cfg.loc_channels, cfg.loc_kernel, padding=cfg.loc_kernel // 2, bias=False)
        self.loc_proj = nn.Linear(cfg.loc_channels, cfg.att_dim, bias=False)
        self.energy = nn.Linear(cfg.att_dim, 1)
        self.cell = nn.LSTMCell(cfg.emb_dim + cfg.enc_hidden, cfg.dec_hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(cfg.dec_hidden + cfg.enc_hidden, cfg.vocab_size)

    def init_state(self, batch: int) -> DecoderState:
        z = self.output.weight.new_zeros(batch, self.cfg.dec_hidden)
        return DecoderState(z, z.clone())

    def step(self, token: torch.Tensor, state: DecoderState, att_prev: torch.Tensor, enc: torch.Tensor,
             keys: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        """One output token.

        token (B,) int64 previous token; att_prev (B, T) previous weights in the same frame
        coordinates as enc (B, T, enc_hidden) / keys (B, T, att_dim); mask (B, T) additive
        (0 inside, MASK_VALUE outside). Returns log-probs (B, V), new state, weights (B, T).
        """
        loc = self.loc_proj(self.loc_conv(att_prev.unsqueeze(1)).transpose(1, 2))  # (B, T, A)
        e = self.energy(torch.tanh(self.query(state.h).unsqueeze(1) + keys + loc)).squeeze(-1)
        att = torch.softmax(e + mask, dim=-1)  # (B, T)
        ctx = torch.bmm(att.unsqueeze(1), enc).squeeze(1)  # (B, enc_hidden)
        h, c = self.cell(torch.cat([self.embed(token), ctx], dim=-1), (state.h, state.c))
        logits = self.output(self.dropout(torch.cat([h, ctx], dim=-1)))
        return F.log_softmax(logits, dim=-1), DecoderState(h, c), att


class AttentionModel(nn.Module):
    """Encoder + CTC head + attention decoder. Training-time teacher forcing lives here."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = AttentionDecoder(cfg)

    def teacher_forced(self, enc: torch.Tensor, keys: torch.Tensor, enc_lens: torch.Tensor,
                       tokens_in: torch.Tensor, windowed: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs the decoder over (B, U) input tokens. Returns log-probs (B, U, V), weights (B, U, T).

        With `windowed`, each step sees only [m - B, m - B + W) and m = max(m, argmax a),
        exactly the inference rule, so fine-tuning matches decoding.
        """
        bsz, t_max, _ = enc.shape
        frame_idx = torch.arange(t_max, device=enc.device).unsqueeze(0)  # (1, T)
        valid = frame_idx < enc_lens.unsqueeze(1)  # (B, T)
        pad_mask = torch.where(valid, 0.0, MASK_VALUE)
        state = self.decoder.init_state(bsz)
        att = F.one_hot(torch.zeros(bsz, dtype=torch.long, device=enc.device), t_max).float()
        centre = torch.zeros(bsz, dtype=torch.long, device=enc.device)
        logps, atts = [], []
        for i in range(tokens_in.shape[1]):
            mask = pad_mask
            att_prev = att
            if windowed:
                start = (centre - self.cfg.window_back).unsqueeze(1)
                inside = (frame_idx >= start) & (frame_idx < start + self.cfg.window_size)
                mask = torch.where(inside & valid, 0.0, MASK_VALUE)
                att_prev = att * inside  # inference sees zeros outside its window
            logp, state, att = self.decoder.step(tokens_in[:, i], state, att_prev, enc, keys, mask)
            if windowed:
                centre = torch.maximum(centre, att.argmax(dim=-1))
            logps.append(logp)
            atts.append(att)
        return torch.stack(logps, 1), torch.stack(atts, 1)
