"""Training and dev voices of the synthetic corpus, and how to run each engine.

The split is by voice: no voice is in both train and dev. Voices reserved for the
team's evaluation (pico2wave, festival/text2wave, flite `slt`, MBROLA `us2`) are
never listed here and `check_not_reserved` refuses them.
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
import random
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

RESERVED = ("pico", "festival", "text2wave", "slt", "us2")

_ESPEAK_TRAIN_LANGS = ["en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                       "en-gb-x-gbcwmd", "en-029"]
_ESPEAK_DEV_LANGS = ["en-us-nyc"]
_ESPEAK_VARIANTS = ["", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7", "+f1", "+f2",
                    "+f3", "+f4", "+f5", "+klatt", "+klatt2", "+klatt4", "+david",
                    "+edward", "+john", "+linda", "+steph", "+paul", "+robert", "+aunty"]
# MBROLA diphone voices of other languages that espeak-ng drives with English phonemes
# (`mb-<voice>-en`): accented English, but 16 more human speakers (8 female), where the
# core set has only five one-speaker natural voices. Train-only; the dev set is unchanged.
ACCENTED_MBROLA = ["af1", "nl2", "fr1", "fr4", "de1", "de2", "de3", "de4", "de5", "de6",
                   "gr2", "hu1", "pl1", "ro1", "sw1", "sw2"]
# 17 more MBROLA voices (3 female) for which espeak-ng ships no English voice file: we write
# `mbx-<voice>-en` ourselves (English phonemes, the voice's own mbrola line and phoneme table)
# into a private espeak-ng data folder. Chosen by counting mbrola's missing-diphone warnings on
# 20 dev sentences (mb-de1-en, which espeak-ng ships, gives 16). Session 12 kept the first 12
# (0-14 warnings) and left out de8, nl1, nl3, it3, it4 and br1 (65-464: syllables replaced by
# silence). Session 13 tried the 35 other Debian voices and kept id1, ir1, mx1 (0-14), ca2 (45,
# mostly a schwa after a vowel) and gr1 (53, scattered); the rest gave 76-490, cn1 no sound.
EXTRA_MBROLA = ["de7", "fr2", "fr3", "fr5", "fr6", "fr7", "es1", "es2", "pt1", "mx2", "cr1", "ca1",
                "id1", "ir1", "mx1", "ca2", "gr1"]
# RHVoice (Debian non-free `rhvoice-english`): statistical parametric (HTS-style) voices, a fourth engine
# and closer to a human voice than the diphone and formant ones. Five English speakers ship; its `slt` is
# the reserved flite speaker and stays out. alan (the flite awb speaker), bdl, clb (female) and lyubov
# (female, Russian-accented) train; evgeniy-eng (male, Russian-accented) is held out as a dev voice.
# Weight 0: drawn only when a corpus selects them (`--voices` RHVOICE_ENGLISH; 'rhvoice:*' adds RHVOICE_ACCENTED).
RHVOICE_TRAIN = ["alan", "bdl", "clb", "lyubov"]
RHVOICE_DEV = ["evgeniy-eng"]
RHVOICE_ENGLISH = ",".join(f"rhvoice:{name}" for name in RHVOICE_TRAIN + RHVOICE_DEV)  # a --voices glob
# RHVoice's Russian, Ukrainian and Kyrgyz voices (`rhvoice-russian`, `rhvoice-ukrainian`, `rhvoice-kyrgyz`) read
# Latin-script text through their own phone sets: strongly accented English, 15 more speakers (8 female), train-only.
# Session 25 had v1.13.0 transcribe 12 sentences from each of the 31 non-English voices and kept those
# under 90 % WER (67-90 %; the English voices gave 26-54 %). Left out: evgeniy-rus (the same speaker
# as the dev voice evgeniy-eng), aleksandr (aleksandr-hq's speaker), anna, yuriy and anatol (90-95 %),
# and the Polish, Portuguese, Macedonian, Albanian, Esperanto and Tatar voices (99-112 %: they read
# English by their own orthography). The Kyrgyz azamat and nazgul (`rhvoice-kyrgyz`, 85-86 %) were
# scored after that choice and joined in session 26; that session's leg with them (v1.14.0 + 6,000 steps
# on 6 RHVoice voices' prose, MODEL_NOTES.md) did not ship, so no bundled model has heard them yet.
RHVOICE_ACCENTED = ["aleksandr-hq", "arina", "artemiy", "elena", "irina", "mikhail", "pavel", "tatiana",
                    "victoria", "vitaliy", "marianna", "natalia", "volodymyr", "azamat", "nazgul"]


@dataclass(frozen=True)
class Voice:
    """One synthesizer voice. `engine` is espeak, mbrola, flite or rhvoice."""

    engine: str
    name: str
    split: str  # "train" or "dev"
    weight: float  # relative share of utterances

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}"


def check_not_reserved(name: str) -> None:
    if any(r in name for r in RESERVED):
        raise ValueError(f"voice {name!r} is reserved for evaluation and must not be used")


def all_voices() -> list[Voice]:
    """Every voice. Voices with weight 0 (the accented MBROLA set) are only drawn when a
    corpus selects them by name (`corpus --voices`), so the core corpus stays as it was."""
    voices: list[Voice] = []
    n_espeak_train = len(_ESPEAK_TRAIN_LANGS) * len(_ESPEAK_VARIANTS)
    for lang in _ESPEAK_TRAIN_LANGS:
        for var in _ESPEAK_VARIANTS:
            voices.append(Voice("espeak", lang + var, "train", 0.40 / n_espeak_train))
    for lang in _ESPEAK_DEV_LANGS:
        for var in _ESPEAK_VARIANTS:
            voices.append(Voice("espeak", lang + var, "dev", 1.0 / len(_ESPEAK_VARIANTS)))
    voices += [Voice("mbrola", "mb-us1", "train", 0.18), Voice("mbrola", "mb-us3", "train", 0.17),
               Voice("mbrola", "mb-en1", "dev", 1.0)]
    voices += [Voice("flite", "kal", "train", 0.08), Voice("flite", "kal16", "train", 0.09),
               Voice("flite", "awb", "train", 0.08), Voice("flite", "rms", "dev", 1.0)]
    voices += [Voice("mbrola", f"mb-{name}-en", "train", 0.0) for name in ACCENTED_MBROLA]
    voices += [Voice("mbrola", f"mbx-{name}-en", "train", 0.0) for name in EXTRA_MBROLA]
    voices += [Voice("rhvoice", name, "train", 0.0) for name in RHVOICE_TRAIN]
    voices += [Voice("rhvoice", name, "dev", 0.0) for name in RHVOICE_DEV]
    voices += [Voice("rhvoice", name, "train", 0.0) for name in RHVOICE_ACCENTED]
    for v in voices:
        check_not_reserved(v.name)
    return voices


def synthesize(voice: Voice, text: str, rng: random.Random) -> tuple[np.ndarray, int]:
    """Speak `text` with a random rate and pitch. Returns ((N,) float32, sample rate)."""
    check_not_reserved(voice.name)
    rate = rng.uniform(0.8, 1.3)
    stdin = None
    if voice.engine == "rhvoice":
        # rate and pitch in percent of the voice's own (100; it clamps to 50-200); text on stdin
        cmd = ["RHVoice-test", "-p", voice.name, "-r", f"{100 * rate:.0f}",
               "-t", f"{rng.uniform(80, 125):.0f}", "-o", "/dev/stdout"]
        stdin = text.encode()
    elif voice.engine == "flite":
        cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={1 / rate:.3f}",
               "--setf", f"int_f0_target_mean={rng.uniform(80, 160):.0f}", "-t", text, "-o", "/dev/stdout"]
    else:
        wpm = int(175 * rate)
        cmd = ["espeak-ng", "-v", voice.name, "-s", str(wpm), "-p", str(rng.randint(25, 75)),
               "--stdout", text]
        if voice.name.startswith("mbx-"):
            cmd[1:1] = [f"--path={espeak_data_with_extra_voices()}"]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=120, check=True)
    audio, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    return audio, sr


@functools.cache
def espeak_data_with_extra_voices() -> Path:
    """A folder to pass as `espeak-ng --path`: its espeak-ng-data links every entry of the
    system's data and adds voices/mbx/mbx-<voice>-en for EXTRA_MBROLA. Built once per
    content in the temp folder; concurrent workers race to an atomic rename, any winner is fine."""
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"Data at: (\S+)", version)
    if not match:
        raise RuntimeError(f"cannot find espeak-ng's data folder in {version!r}")
    system = Path(match.group(1))
    files = {}
    for name in EXTRA_MBROLA:
        line = next((ln for ln in (system / "voices" / "mb" / f"mb-{name}").read_text().splitlines()
                     if ln.startswith("mbrola ")), None)
        if line is None:
            raise RuntimeError(f"espeak-ng's voice file mb/mb-{name} has no mbrola line")
        files[f"mbx-{name}-en"] = f"name en-mbrola-{name}\nlanguage en 20\n\n{line}\n"
    key = hashlib.sha256(repr((str(system), sorted(files.items()))).encode()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / f"stt-espeak-ng-{key}"
    if root.is_dir():
        return root
    tmp = Path(tempfile.mkdtemp(prefix="stt-espeak-ng-", dir=root.parent))
    data = tmp / "espeak-ng-data"
    (data / "voices" / "mbx").mkdir(parents=True)
    for entry in system.iterdir():
        if entry.name != "voices":
            (data / entry.name).symlink_to(entry)
    for entry in (system / "voices").iterdir():
        (data / "voices" / entry.name).symlink_to(entry)
    for name, body in files.items():
        (data / "voices" / "mbx" / name).write_text(body)
    try:
        os.rename(tmp, root)
    except OSError:  # another worker finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return root
