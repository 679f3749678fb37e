"""Offline sentence sources and text normalization for the synthetic corpus.

Everything here reads local files only (Debian `fortunes`, `wordnet-base`) plus
templates of everyday speech, and normalizes to the model's alphabet: lower-case
letters, apostrophe and space, numbers spelled out.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

from num2words import num2words

FORTUNE_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")
MAX_WORDS = 25
MIN_WORDS = 1

_CURRENCY = re.compile(r"\$(\d+(?:\.\d\d)?)")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s?%")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_NOT_ALPHABET = re.compile(r"[^a-z' ]+")


def _spell_currency(match: re.Match) -> str:
    dollars, _, cents = match.group(1).partition(".")
    words = f" {num2words(int(dollars))} dollars "
    if cents and int(cents):
        words += f"and {num2words(int(cents))} cents "
    return words


def _spell_number(match: re.Match) -> str:
    text = match.group(0)
    if "." in text:
        return f" {num2words(float(text))} "
    value = int(text)
    # Four-digit numbers between 1100 and 1999 are usually years: "nineteen eighty four".
    if 1100 <= value <= 1999 or 2010 <= value <= 2099:
        return f" {num2words(value, to='year')} "
    return f" {num2words(value)} "


def normalize(text: str) -> str:
    """Map free text to the model alphabet; returns '' when nothing usable is left."""
    text = text.replace("&", " and ").replace("’", "'").replace("‘", "'")
    text = _CURRENCY.sub(_spell_currency, text)
    text = _PERCENT.sub(lambda m: f" {m.group(1)} percent ", text)
    text = _ORDINAL.sub(lambda m: f" {num2words(int(m.group(1)), to='ordinal')} ", text)
    text = _NUMBER.sub(_spell_number, text)
    text = text.lower().replace("-", " ")
    text = _NOT_ALPHABET.sub(" ", text)
    # Apostrophes only inside words ("don't"), never as quotes.
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)
    return " ".join(text.split())


def fortunes() -> list[str]:
    """Quotes from the Debian fortune files (offensive ones excluded)."""
    out: list[str] = []
    if not FORTUNE_DIR.is_dir():
        return out
    for path in sorted(FORTUNE_DIR.iterdir()):
        if path.suffix or not path.is_file():
            continue
        for entry in path.read_text(errors="ignore").split("\n%\n"):
            # Attribution lines ("-- Mark Twain") are not speech.
            body = " ".join(l for l in entry.splitlines() if not l.strip().startswith("--"))
            for sentence in re.split(r"(?<=[.!?])\s+", body):
                out.append(sentence)
    return out


def wordnet_sentences() -> list[str]:
    """WordNet glosses and quoted usage examples."""
    out: list[str] = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = WORDNET_DIR / f"data.{pos}"
        if not path.exists():
            continue
        for line in path.read_text(errors="ignore").splitlines():
            if line.startswith(" ") or "|" not in line:
                continue
            gloss = line.split("|", 1)[1]
            for part in gloss.split(";"):
                out.append(part.strip().strip('"'))
    return out


_STREETS = ["main street", "oak avenue", "park road", "elm street", "sunset boulevard",
            "maple drive", "river lane", "church street", "high street", "lake view court"]
_CITIES = ["boston", "denver", "seattle", "austin", "chicago", "london", "dublin",
           "toronto", "portland", "atlanta", "phoenix", "miami"]
_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december"]
_DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_NAMES = ["john", "mary", "alex", "sarah", "david", "emma", "michael", "olivia", "james", "sophia"]
_ITEMS = ["milk", "bread", "eggs", "coffee", "apples", "batteries", "a new phone charger",
          "two tickets", "the report", "some flowers"]
_COMMANDS = ["turn on the lights", "turn off the radio", "set an alarm for {time}",
             "call {name} at {phone}", "remind me to buy {item} on {day}",
             "what is the weather in {city} tomorrow", "play some music",
             "send a message to {name} saying i will be late",
             "book a table for {n} people at {time}", "how far is it to {city}",
             "navigate to {addr}", "set a timer for {n} minutes", "what time is it in {city}",
             "add {item} to my shopping list", "cancel my meeting on {day}",
             "transfer {money} to {name}", "my account number is {digits}",
             "the meeting is on {date} at {time}", "i live at {addr}",
             "please pay {money} by {date}", "the temperature is {n} degrees",
             "my flight leaves at {time} on {day}", "it costs {money}",
             "the population grew by {pct} last year", "order {n} {item}"]


def _time(rng: random.Random) -> str:
    hour, minute = rng.randint(1, 12), rng.choice([0, 5, 10, 15, 20, 30, 45, rng.randint(0, 59)])
    suffix = rng.choice(["a m", "p m", "in the morning", "in the evening", ""])
    if minute == 0:
        core = f"{hour} o'clock" if not suffix or rng.random() < 0.5 else f"{hour}"
    elif minute < 10:
        core = f"{hour} oh {minute}"
    else:
        core = f"{hour} {minute}"
    return f"{core} {suffix}".strip()


def _render(template: str, rng: random.Random) -> str:
    values = {
        "time": _time(rng), "name": rng.choice(_NAMES), "city": rng.choice(_CITIES),
        "item": rng.choice(_ITEMS), "day": rng.choice(_DAYS), "n": str(rng.randint(2, 60)),
        "phone": " ".join(str(rng.randint(0, 9)) for _ in range(7)),
        "digits": " ".join(str(rng.randint(0, 9)) for _ in range(rng.randint(4, 10))),
        "addr": f"{rng.randint(1, 9999)} {rng.choice(_STREETS)} {rng.choice(_CITIES)}",
        "date": f"{rng.choice(_MONTHS)} {rng.randint(1, 28)}{rng.choice(['st', 'th', ''])}"
                + (f" {rng.randint(1990, 2030)}" if rng.random() < 0.4 else ""),
        "money": f"${rng.randint(1, 5000)}" + (f".{rng.randint(10, 99)}" if rng.random() < 0.3 else ""),
        "pct": f"{rng.randint(1, 99)}%",
    }
    return template.format(**values)


def everyday(count: int, seed: int = 0) -> list[str]:
    """Commands, times, dates, numbers and addresses: what users say most."""
    rng = random.Random(seed)
    return [_render(rng.choice(_COMMANDS), rng) for _ in range(count)]


def build_sentences(seed: int = 0, everyday_count: int = 20000) -> list[str]:
    """All normalized unique sentences (1..25 words), shuffled deterministically."""
    seen: set[str] = set()
    out: list[str] = []
    for raw in fortunes() + wordnet_sentences() + everyday(everyday_count, seed):
        text = normalize(raw)
        n_words = len(text.split())
        if MIN_WORDS <= n_words <= MAX_WORDS and text not in seen:
            seen.add(text)
            out.append(text)
    random.Random(seed).shuffle(out)
    return out
