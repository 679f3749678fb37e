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
    return _unique_normalized(fortunes() + wordnet_sentences() + everyday(everyday_count, seed), seed)


def _unique_normalized(raw: list[str], seed: int) -> list[str]:
    """Normalized sentences of MIN_WORDS..MAX_WORDS words, first occurrence kept, shuffled by seed."""
    seen: set[str] = set()
    out: list[str] = []
    for sentence in raw:
        text = normalize(sentence)
        if MIN_WORDS <= len(text.split()) <= MAX_WORDS and text not in seen:
            seen.add(text)
            out.append(text)
    random.Random(seed).shuffle(out)
    return out


# Conversational speech: what people say to each other and to a phone or a call centre. The
# other sources are written prose; these carry the everyday words they lack (the first corpus
# had "hello" in 5 of 46,000 utterances).
_GREETINGS = ["hello", "hi", "hey", "good morning", "good afternoon", "good evening", "hi there",
              "hello there", "hey there", "morning", "welcome back", "nice to see you"]
_CLOSINGS = ["goodbye", "bye", "bye for now", "see you later", "see you soon", "see you tomorrow",
             "talk to you later", "have a nice day", "have a good weekend", "take care", "good night",
             "thanks again", "speak soon", "catch you later"]
_THANKS = ["thank you", "thanks", "thank you very much", "thanks a lot", "many thanks",
           "thank you so much", "i really appreciate it", "that's very kind of you"]
_REPLIES = ["yes", "no", "okay", "sure", "of course", "yes please", "no thank you", "i don't know",
            "maybe later", "that's right", "that's fine", "not really", "i think so", "i'm not sure",
            "sounds good", "all right", "no problem", "you're welcome", "exactly", "absolutely",
            "never mind", "i see", "got it", "just a moment", "hold on a second", "go ahead"]
_PLACES = ["the station", "the airport", "the hospital", "the office", "the bank", "the hotel",
           "the nearest pharmacy", "the post office", "the supermarket", "the library", "the museum",
           "the city centre", "the bus stop", "the restaurant", "the parking lot", "the beach",
           "your house", "the school", "the cinema", "the gym"]
_THINGS = ["the window", "the fridge", "the garage", "the front gate", "the back door", "the curtains",
           "my email", "the app", "the calendar", "the file", "a new tab", "the settings", "the map",
           "the camera", "the box", "the letter", "the blinds", "the oven", "the trunk", "the closet"]
_FEELINGS = ["fine", "great", "good", "tired", "busy", "happy", "a bit sick", "much better", "hungry",
             "okay", "excited", "worried", "bored", "sleepy", "cold", "late"]
_FOODS = ["pizza", "a sandwich", "some soup", "chicken and rice", "a cup of tea", "a glass of water",
          "orange juice", "a salad", "pasta", "breakfast", "ice cream", "fish and chips", "a burger",
          "some fruit", "dinner", "lunch", "a coffee with milk", "chocolate cake"]
_ACTIVITIES = ["go for a walk", "watch a movie", "play football", "go shopping", "read a book",
               "visit my parents", "clean the house", "cook dinner", "go swimming", "take a nap",
               "listen to music", "work from home", "study for the exam", "go to the doctor",
               "wash the car", "call my sister", "meet some friends", "go to bed early", "fix the bike",
               "walk the dog", "paint the kitchen", "catch the train"]
_PEOPLE = ["my mother", "my father", "my brother", "my sister", "my wife", "my husband", "my son",
           "my daughter", "my friend", "my boss", "the doctor", "the manager", "the teacher",
           "your colleague", "the neighbours", "our kids", "my grandmother", "the driver"]
_WHEN = ["today", "tomorrow", "tonight", "this morning", "this afternoon", "this evening",
         "next week", "last night", "yesterday", "right now", "later", "on {day}", "at {time}",
         "in {n} minutes", "in an hour", "this weekend", "next month", "soon", "every day"]
_TALK = [
    "{greeting}", "{greeting} {name}", "{greeting} how are you", "{greeting} how are you doing {when}",
    "{greeting} {name} how was your day", "{greeting} it's {name}", "{greeting} this is {name} speaking",
    "{greeting} can you hear me", "{greeting} is anybody there", "{greeting} my name is {name}",
    "{greeting} i'm calling about {thing}", "{greeting} i'd like to speak to {person}",
    "{closing}", "{closing} {name}", "{thanks}", "{thanks} {name}", "{thanks} for your help",
    "{thanks} {closing}", "{reply}", "{reply} {thanks}", "{reply} {name}",
    "how are you", "i'm {feeling} {thanks}", "i'm {feeling} and you", "i feel {feeling} {when}",
    "how was your weekend", "what did you do {when}", "what are you doing {when}",
    "i'm going to {activity} {when}", "do you want to {activity} {when}", "let's {activity} {when}",
    "i have to {activity} {when}", "i can't {activity} {when}", "we should {activity} {when}",
    "would you like {food}", "can i have {food} please", "i'd like {food}", "i'll have {food}",
    "we're out of {food}", "is there any {food} left", "i'm having {food} for {meal}",
    "where is {place}", "how do i get to {place}", "is {place} far from here", "take me to {place}",
    "i'm at {place}", "meet me at {place} {when}", "i'm on my way to {place}", "when does {place} open",
    "open {thing}", "close {thing}", "please open {thing}", "could you close {thing}", "did you lock {thing}",
    "check {thing}", "show me {thing}", "where did you put {thing}", "i can't find {thing}",
    "can you help me", "could you help me with {thing}", "can you say that again",
    "could you speak a little slower", "sorry i didn't catch that", "excuse me", "sorry about that",
    "excuse me where is {place}", "sorry i'm late", "i'm sorry {name}", "what do you mean",
    "what's your name", "my name is {name}", "nice to meet you {name}", "this is {person}",
    "where are you from", "i'm from {city}", "i live in {city}", "how long have you lived in {city}",
    "what time does the {vehicle} leave", "the {vehicle} is late again", "is this seat taken",
    "how much does it cost", "how much is {food}", "can i pay by card", "do you take cash",
    "call {person}", "call {name} {when}", "tell {person} i'll be late", "ask {person} to call me back",
    "i'll call you back {when}", "can you call me {when}", "i missed your call", "my phone is dead",
    "is {person} at home", "{person} is not here {when}", "{person} will be back {when}",
    "what's the weather like {when}", "is it going to rain {when}", "it's really {weather} {when}",
    "what day is it today", "what's the date today", "what time is the meeting",
    "how long will it take", "when are you coming home", "are you coming {when}",
    "i'll be there {when}", "i'll see you {when}", "see you at {time}", "let's meet {when}",
    "where shall we meet", "i don't feel well", "i need to see a doctor", "i have a headache",
    "please wait here", "wait for me", "hurry up", "be careful", "don't worry", "good luck",
    "happy birthday {name}", "congratulations", "well done", "i love you", "i miss you",
    "do you speak english", "i don't understand", "what does that mean", "how do you spell that",
    "could you repeat the number", "my phone number is {phone}", "my order number is {digits}",
    "i'd like to make an appointment", "i'd like to cancel my order", "i want to change my password",
    "my internet is not working", "the screen is frozen", "i can't log in", "it says error",
    "is there anything else i can help you with", "please hold the line", "how can i help you",
    "what can i do for you", "your call is important to us", "please leave a message after the tone",
    "yes that's correct", "no that's wrong", "can i ask you a question", "what do you think",
    "i think you're right", "i agree", "i don't agree", "that's a good idea", "that's too bad",
    "it doesn't matter", "it's up to you", "are you sure", "are you ready", "i'm ready", "let's go",
    "turn {updown} the volume", "turn {onoff} the {device}", "switch {onoff} the {device}",
    "is the {device} {onoff}", "the {device} is broken", "can you fix the {device}",
]
_MEALS = ["breakfast", "lunch", "dinner"]
_VEHICLES = ["bus", "train", "plane", "ferry", "taxi", "next train", "last bus"]
_WEATHER = ["cold", "hot", "windy", "sunny", "cloudy", "warm", "wet", "nice"]
_DEVICES = ["heating", "tv", "television", "radio", "lights", "fan", "air conditioning",
            "computer", "kettle", "washing machine", "dishwasher", "printer", "alarm"]


def _render_talk(template: str, rng: random.Random) -> str:
    choice = rng.choice
    values = {
        "greeting": choice(_GREETINGS), "closing": choice(_CLOSINGS), "thanks": choice(_THANKS),
        "reply": choice(_REPLIES), "place": choice(_PLACES), "thing": choice(_THINGS),
        "feeling": choice(_FEELINGS), "food": choice(_FOODS), "activity": choice(_ACTIVITIES),
        "person": choice(_PEOPLE), "meal": choice(_MEALS), "vehicle": choice(_VEHICLES),
        "weather": choice(_WEATHER), "device": choice(_DEVICES), "updown": choice(["up", "down"]),
        "onoff": choice(["on", "off"]), "when": choice(_WHEN),
    }
    # {when} may itself hold slots ({day}, {time}, {n}): render it first.
    values["when"] = _render(values["when"], rng)
    return _render(template.format(**values, name="{name}", city="{city}", phone="{phone}",
                                   digits="{digits}", time="{time}", day="{day}", n="{n}"), rng)


def talk(count: int, seed: int = 0) -> list[str]:
    """Templated conversational sentences (greetings, replies, requests, phone calls)."""
    rng = random.Random(seed)
    return [_render_talk(rng.choice(_TALK), rng) for _ in range(count)]


def chatbot_corpus() -> list[str]:
    """The English lines of the chatterbot-corpus package (BSD), when it is installed: small-talk
    questions and answers. Empty without it."""
    try:
        import chatterbot_corpus
        import yaml
    except ImportError:
        return []
    out: list[str] = []
    for path in sorted((Path(chatterbot_corpus.__file__).parent / "data" / "english").glob("*.yml")):
        for conversation in (yaml.safe_load(path.read_text()) or {}).get("conversations", []):
            for line in conversation:
                if isinstance(line, str):
                    out.extend(re.split(r"(?<=[.!?])\s+", line))
    return out


def build_talk_sentences(seed: int = 0, talk_count: int = 30000) -> list[str]:
    """Conversational sentences only: templated talk, chatterbot-corpus lines and the everyday
    commands, normalized, unique, shuffled deterministically."""
    return _unique_normalized(talk(talk_count, seed) + chatbot_corpus() + everyday(talk_count // 4, seed + 1), seed)
