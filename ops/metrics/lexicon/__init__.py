"""The medical lexicon of the entity metrics: TOML data files → one longest-match term table.

Input: the ``*.toml`` files of this folder (``en.toml``, ``zh.toml``) or the paths given to ``Lexicon.load``. Output: a
frozen ``Lexicon`` mapping token tuples to ``Term``s. Failure modes: ``LexiconError`` for a malformed file, an unknown
table or assertion name, a laterality suffix other than left/right/bilateral, or one surface form with two meanings.
Tables: en.toml (full description) and ops/metrics/README.md.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import NamedTuple

from ops.metrics.tokens import tokenize

HERE = Path(__file__).resolve().parent
ENTITY_KINDS = ("finding", "anatomy", "summary")
SIDES = ("left", "right", "bilateral")
_CUES = {"negation": ("negated", True, False), "negation_post": ("negated", False, True),
         "uncertain": ("uncertain", True, False), "uncertain_post": ("uncertain", False, True),
         "pseudo": ("present", True, False)}


class LexiconError(ValueError):
    """A lexicon file cannot be used (the message names the file and the entry)."""


class Term(NamedTuple):
    """One meaning of a surface form. ``kind`` is an entity kind, "laterality", "cue", "terminator"
    or "list_word"; ``concept`` is the canonical name (for a cue the assertion it sets: "negated",
    "uncertain", or "present" for a pseudo-cue such as "no change"); ``side`` an intrinsic
    laterality; ``forward``/``backward`` a cue's direction."""

    kind: str
    concept: str
    side: str | None = None
    forward: bool = False
    backward: bool = False


@dataclass(frozen=True)
class Lexicon:
    terms: dict[tuple[str, ...], Term]
    # first token → candidate lengths, longest first (the greedy longest match tries them in order)
    lengths: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @classmethod
    def load(cls, paths: Iterable[Path] | None = None) -> Lexicon:
        files = sorted(HERE.glob("*.toml")) if paths is None else list(paths)
        terms: dict[tuple[str, ...], Term] = {}
        for path in files:
            for surface, term in _entries(path):
                _add(terms, tuple(tokenize(surface, "zh")), term, f"{path.name}: {surface!r}")
        for key, term in list(terms.items()):  # plurals after all explicit forms, never overriding
            if term.kind in ENTITY_KINDS and key[-1].isascii():
                for plural in _plurals(key[-1]):
                    terms.setdefault((*key[:-1], plural), term)
        lengths: dict[str, set[int]] = {}
        for key in terms:
            lengths.setdefault(key[0], set()).add(len(key))
        return cls(terms, {k: tuple(sorted(v, reverse=True)) for k, v in lengths.items()})

    def concepts(self, kind: str) -> set[str]:
        return {t.concept for t in self.terms.values() if t.kind == kind}


@cache
def default_lexicon() -> Lexicon:
    """The shipped lexicon, loaded once."""
    return Lexicon.load()


def _entries(path: Path) -> Iterable[tuple[str, Term]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise LexiconError(f"{path.name}: {exc}") from exc
    for table, entries in data.items():
        if not isinstance(entries, dict):
            raise LexiconError(f"{path.name}: [{table}] is not a table")
        for name, forms in entries.items():
            if not isinstance(forms, list) or not all(isinstance(f, str) and f.strip() for f in forms):
                raise LexiconError(f"{path.name}: [{table}] {name} is not a list of strings")
            term = _term(path, table, name)
            yield from ((form, term) for form in forms)


def _term(path: Path, table: str, name: str) -> Term:
    if table in ENTITY_KINDS:
        concept, _, side = name.partition("@")
        if side and side not in SIDES:
            raise LexiconError(f"{path.name}: [{table}] {name}: laterality must be one of {SIDES}")
        return Term(table, concept, side or None)
    if table == "laterality" and name in SIDES:
        return Term("laterality", name, name)
    if table == "cue" and name in _CUES:
        assertion, forward, backward = _CUES[name]
        return Term("cue", assertion, None, forward, backward)
    if table == "clause" and name in ("terminator", "list_word"):
        return Term(name, name)
    raise LexiconError(f"{path.name}: unknown entry [{table}] {name}")


def _add(terms: dict[tuple[str, ...], Term], key: tuple[str, ...], term: Term, where: str) -> None:
    if not key:
        raise LexiconError(f"{where}: no word to match")
    old = terms.get(key)
    if old is None or old == term:
        terms[key] = term
    elif old.kind == term.kind == "cue" and old.concept == term.concept:
        # the same cue listed as forward and as backward applies in both directions
        terms[key] = old._replace(forward=old.forward or term.forward, backward=old.backward or term.backward)
    else:
        raise LexiconError(f"{where}: already means {old.kind} {old.concept!r}")


def _plurals(word: str) -> tuple[str, ...]:
    if word.endswith("sis"):
        return (word[:-3] + "ses",)  # metastasis → metastases
    if word.endswith("us"):
        return (word[:-2] + "i", word + "es")  # thrombus → thrombi
    if word.endswith("y") and len(word) > 2:
        return (word[:-1] + "ies",)  # opacity → opacities
    return (word + "s", word + "es")
