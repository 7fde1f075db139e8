"""Realistic synthetic reports: FINDINGS → IMPRESSION pairs whose phrasing varies as between radiologists (invented).

Stage: none (a data source for the retrieval benchmark and tests). Input: ``realistic_reports.toml`` beside this module,
a route, a count, a report seed and a department seed (which radiologists, with which styles). Output: ``RealisticItem``
(a ``synthetic.CorpusItem`` plus the radiologist); deterministic in (route, n, seed, department) on any machine.
Failure modes: ``KeyError`` for an unknown route; ``tomllib.TOMLDecodeError`` for a broken data file.
"""

from __future__ import annotations

import random
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from model.demo.synthetic import CorpusItem, ListStyle, format_impression
from schemas.events import BodySystem, Modality

DATA_FILE = Path(__file__).with_name("realistic_reports.toml")
_WORD = re.compile(r"[A-Za-z][A-Za-z\-]*")


@dataclass(frozen=True)
class RealisticItem(CorpusItem):
    radiologist: str = ""  # "<route>-r<k>": whose style wrote it (for splits by radiologist)


@dataclass(frozen=True)
class Style:
    """One radiologist's habits; ``key`` seeds which paraphrase of every sentence set is theirs."""

    name: str
    key: str
    loyalty: float
    typo_rate: float
    abbrev_rate: float
    shuffle: float
    order: tuple[int, ...]
    list_style: ListStyle
    verbosity: str
    unit: str
    negatives: float
    minor: float
    otherwise: float
    readers: float


@cache
def _spec() -> dict[str, Any]:
    with DATA_FILE.open("rb") as fh:
        return tomllib.load(fh)


def routes() -> tuple[str, ...]:
    """The routes the data file describes, in file order."""
    return tuple(_spec()["routes"])


def department(route: str, seed: int = 0) -> tuple[Style, ...]:
    """The radiologists of ``route`` in department ``seed``: same seed, same people with the same habits."""
    spec, style = _spec()["routes"][route], _spec()["style"]
    rng = random.Random(f"department:{seed}:{route}")
    people = []
    for k in range(int(spec["radiologists"])):
        order = list(range(len(spec["organs"])))
        if rng.random() < style["own_order"]:
            rng.shuffle(order)
        people.append(Style(
            name=f"{route}-r{k}", key=f"{seed}:{route}:{k}", loyalty=rng.uniform(*style["loyalty"]),
            typo_rate=rng.choice(style["typo_rate"]), abbrev_rate=rng.choice(style["abbrev_rate"]),
            shuffle=rng.choice(style["shuffle"]), order=tuple(order), list_style=rng.choice(style["list_style"]),
            verbosity=rng.choice(style["verbosity"]), unit=rng.choice(style["unit"]),
            negatives=rng.choice(style["negatives"]), minor=rng.choice(style["minor"]),
            otherwise=rng.choice(style["otherwise"]), readers=rng.uniform(*style["readers"]),
        ))
    return tuple(people)


@cache
def _preferred(style_key: str, set_key: str, n: int) -> int:
    return random.Random(f"{style_key}/{set_key}").randrange(n)


def _choose(rng: random.Random, style: Style, set_key: str, options: Sequence[str]) -> str:
    """The radiologist's own paraphrase with probability ``loyalty``, any other otherwise."""
    if rng.random() < style.loyalty:
        return options[_preferred(style.key, set_key, len(options))]
    return rng.choice(options)


def _slot_values(rng: random.Random, style: Style, language: str) -> dict[str, str]:
    slots = _spec()["slots"]
    values = {name: rng.choice(options) for name, options in slots["choice"].items()}
    space = "" if language == "zh" else " "
    for name, bounds in slots["number"].items():
        if len(bounds) == 3:  # a plain number with decimals
            values[name] = f"{rng.uniform(bounds[0], bounds[1]):.{int(bounds[2])}f}"
            continue
        mm = rng.randint(int(bounds[0]), int(bounds[1]))
        values[name] = f"{mm / 10:.1f}{space}cm" if style.unit == "cm" else f"{mm}{space}mm"
    return values


def _fill(template: str, values: dict[str, str]) -> str:
    text = template.format(**values)
    return text[:1].upper() + text[1:]


def _typo(word: str, rng: random.Random, keyboard: str) -> str:
    """One keyboard slip: swapped, dropped, doubled or neighbouring letter."""
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(4)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    if kind == 2:
        return word[:i] + word[i] + word[i:]
    at = keyboard.find(word[i].lower())
    near = keyboard[at + rng.choice((-1, 1))] if 0 < at < len(keyboard) - 1 else word[i]
    return word[:i] + (near if near != " " else word[i]) + word[i + 1:]


def _noisy_en(text: str, style: Style, rng: random.Random, scale: float) -> str:
    table = _spec()["language"]["en"]["abbreviations"]
    keyboard = _spec()["language"]["en"]["keyboard"]

    def one(match: re.Match[str]) -> str:
        word = match.group(0)
        short = table.get(word.lower())
        if short is not None and rng.random() < style.abbrev_rate * scale:
            return str(short)
        if len(word) >= 4 and rng.random() < style.typo_rate * scale:
            return _typo(word, rng, keyboard)
        return word

    return _WORD.sub(one, text)


def _noisy_zh(text: str, style: Style, rng: random.Random, scale: float) -> str:
    """Chinese: a pinyin-input homophone now and then, and (informal writers) half-width punctuation."""
    zh = _spec()["language"]["zh"]
    if rng.random() < style.typo_rate * 10 * scale:
        hits = [wrong for right, wrong in zh["typos"].items() if right in text]
        if hits:
            wrong = rng.choice(hits)
            right = next(r for r, w in zh["typos"].items() if w == wrong)
            text = text.replace(right, wrong, 1)
    if rng.random() < style.abbrev_rate * scale:
        for full, half in zh["width"].items():
            text = text.replace(full, half)
    return text


def _noisy(text: str, style: Style, rng: random.Random, language: str, scale: float = 1.0) -> str:
    return _noisy_zh(text, style, rng, scale) if language == "zh" else _noisy_en(text, style, rng, scale)


def _organ(organ: dict[str, Any], style: Style, rng: random.Random, language: str
           ) -> tuple[list[str], list[tuple[bool, str]], bool]:
    """One organ's findings sentences, its candidate impression statements (minor?, text), and whether abnormal."""
    sentences: list[str] = []
    statements: list[tuple[bool, str]] = []
    for finding in organ.get("findings", []):
        if rng.random() >= finding["p"]:
            continue
        values = _slot_values(rng, style, language)
        key = f"{organ['name']}.{finding['name']}"
        sentences.append(_fill(_choose(rng, style, f"{key}.findings", finding["findings"]), values))
        minor = bool(finding.get("minor", False))
        if rng.random() < (style.minor if minor else finding.get("p_impression", 0.97)):
            statements.append((minor, _fill(_choose(rng, style, f"{key}.impression", finding["impression"]), values)))
    abnormal = bool(sentences)
    if not abnormal and organ["normal"] and not (style.verbosity == "terse" and rng.random() < 0.35):
        sentences.append(_choose(rng, style, f"{organ['name']}.normal", organ["normal"]))
    return sentences, statements, abnormal


def _findings(spec: dict[str, Any], style: Style, rng: random.Random
              ) -> tuple[list[str], list[tuple[bool, str]], bool]:
    sentences: list[str] = []
    statements: list[tuple[bool, str]] = []
    abnormal = False
    for position in style.order:
        said, stated, sick = _organ(spec["organs"][position], style, rng, spec["language"])
        sentences += said
        statements += stated
        abnormal = abnormal or sick
    if not sentences:  # a terse reader who skipped every normal organ still writes one line
        first = next(organ for organ in spec["organs"] if organ["normal"])
        sentences.append(_choose(rng, style, f"{first['name']}.normal", first["normal"]))
    if len(sentences) > 1 and rng.random() < style.shuffle:
        i = rng.randrange(len(sentences) - 1)
        sentences[i], sentences[i + 1] = sentences[i + 1], sentences[i]
    if style.verbosity == "verbose":
        sentences = [_choose(rng, style, "preamble", spec["preamble"]), *sentences,
                     _choose(rng, style, "fillers", spec["fillers"])]
    return sentences, statements, abnormal


def _impression(spec: dict[str, Any], style: Style, rng: random.Random, statements: list[tuple[bool, str]]) -> list[str]:
    """Major statements first (organ order), then minor ones; pertinent negatives, "otherwise"; or the normal line."""
    items = [text for minor, text in statements if not minor] + [text for minor, text in statements if minor]
    if not items:
        return [_choose(rng, style, "normal_impression", spec["normal_impression"])]
    if rng.random() < style.negatives:
        negative = _choose(rng, style, "negatives", spec["negatives"])
        if negative not in items:
            items.append(negative)
    if rng.random() < style.otherwise:
        items.append(_choose(rng, style, "otherwise", spec["otherwise"]))
    return items


def _one(route: str, rng: random.Random, people: Sequence[Style]) -> RealisticItem:
    spec = _spec()["routes"][route]
    language = spec["language"]
    style = rng.choices(people, weights=[p.readers for p in people])[0]
    sentences, statements, abnormal = _findings(spec, style, rng)
    items = [_noisy(text, style, rng, language, scale=0.5) for text in _impression(spec, style, rng, statements)]
    joiner = "" if language == "zh" else " "
    return RealisticItem(
        route=route, modality=Modality(spec["modality"]), body_system=BodySystem(spec["body_system"]),
        language=language, procedure=spec["procedure"],
        findings=joiner.join(_noisy(text, style, rng, language) for text in sentences),
        impression=format_impression(items, style.list_style, language), impression_items=tuple(items),
        abnormal=abnormal, radiologist=style.name,
    )


def generate(route: str, n: int, *, seed: int = 0, department_seed: int = 0) -> list[RealisticItem]:
    """``n`` reports of ``route`` by the radiologists of department ``department_seed``; deterministic."""
    if route not in _spec()["routes"]:
        raise KeyError(f"unknown realistic route {route!r}")
    people = department(route, department_seed)
    rng = random.Random(f"reports:{seed}:{department_seed}:{route}")
    return [_one(route, rng, people) for _ in range(n)]


def data_fingerprint() -> bytes:
    """The bytes that decide the corpus (for recipe hashes)."""
    return DATA_FILE.read_bytes()
