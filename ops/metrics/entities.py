"""Entity recognition for the entity metrics: text → entity mentions with assertion and laterality.

Input: an impression or findings text (English, Chinese or mixed) and a ``Lexicon``. Output: the ``Entity`` of every
finding, anatomy and summary mention, in text order. Failure modes: none; text the lexicon does not know yields no
entities. The five steps (units, mentions, clauses, assertion, laterality): ops/metrics/README.md.
"""

from __future__ import annotations

import re
import unicodedata
from typing import NamedTuple

from ops.metrics.lexicon import ENTITY_KINDS, Lexicon, Term, default_lexicon
from ops.metrics.tokens import CJK_CLASS

_UNIT = re.compile(f"[a-z0-9]+|[{CJK_CLASS}]|(?<!\\d)\\.|\\.(?!\\d)|[;:!?。\\n]|[,，]")
_STOPS = frozenset(".;:!?。\n")
_COMMAS = frozenset(",，")


class Entity(NamedTuple):
    kind: str  # "finding" | "anatomy" | "summary"
    concept: str  # canonical concept name from the lexicon
    assertion: str  # "present" | "negated" | "uncertain"
    laterality: str | None  # "left" | "right" | "bilateral" | None


class _Clause(NamedTuple):
    items: list[tuple[int, Term]]  # (unit position, term), in text order
    continues_list: bool


def units(text: str) -> list[str]:
    return _UNIT.findall(unicodedata.normalize("NFKC", text).lower())


def _match(seq: list[str], i: int, lexicon: Lexicon) -> tuple[Term | None, int]:
    for length in lexicon.lengths.get(seq[i], ()):
        term = lexicon.terms.get(tuple(seq[i:i + length]))
        if term is not None:
            return term, length
    return None, 1


def clauses(text: str, lexicon: Lexicon) -> list[_Clause]:
    """Cut the text into clauses holding their lexicon matches (steps 1-3 of the module doc)."""
    seq = units(text)
    out: list[_Clause] = []
    items: list[tuple[int, Term]] = []
    bare, after_comma, i = True, False, 0
    while i < len(seq):
        unit = seq[i]
        if unit in _STOPS or unit in _COMMAS:
            out.append(_Clause(items, after_comma and bare and bool(items)))
            items, bare, after_comma, i = [], True, unit in _COMMAS, i + 1
            continue
        term, length = _match(seq, i, lexicon)
        if term is None or term.kind == "cue":
            bare = False
        if term is not None and term.kind == "terminator":
            out.append(_Clause(items, after_comma and bare and bool(items)))
            items, bare, after_comma = [], True, False
        elif term is not None and term.kind != "list_word":
            items.append((i, term))
        i += length
    out.append(_Clause(items, after_comma and bare and bool(items)))
    return out


def _backward_cue(items: list[tuple[int, Term]], k: int, last_mention: int) -> Term | None:
    for j in range(k + 1, len(items)):
        term = items[j][1]
        if term.kind == "cue" and term.backward and (not term.forward or j > last_mention):
            return term
    return None


def _laterality(items: list[tuple[int, Term]], k: int) -> str | None:
    if items[k][1].side:
        return items[k][1].side
    for j in range(k - 1, -1, -1):
        if items[j][1].side:
            return items[j][1].side
    for j in range(k + 1, len(items)):
        if items[j][1].side:
            return items[j][1].side
    return None


def _resolve(clause: _Clause, inherited: Term | None) -> tuple[list[Entity], Term | None]:
    """Entities of one clause and the forward cue still active at its end (steps 4-5)."""
    items = clause.items
    mentions = [k for k, (_, t) in enumerate(items) if t.kind in ENTITY_KINDS]
    last_mention = mentions[-1] if mentions else -1
    active = inherited if clause.continues_list else None
    found: list[Entity] = []
    for k, (_, term) in enumerate(items):
        if term.kind == "cue" and term.forward and k < last_mention:
            active = term
        elif term.kind == "finding":
            cue = active or _backward_cue(items, k, last_mention)
            found.append(Entity("finding", term.concept, cue.concept if cue else "present", _laterality(items, k)))
        elif term.kind == "anatomy":
            found.append(Entity("anatomy", term.concept, "present", _laterality(items, k)))
        elif term.kind == "summary":
            found.append(Entity("summary", term.concept, "present", None))
    return found, active


def extract(text: str, lexicon: Lexicon | None = None) -> list[Entity]:
    """Every entity mention of ``text`` in order (duplicates kept)."""
    lexicon = lexicon or default_lexicon()
    found: list[Entity] = []
    active: Term | None = None
    for clause in clauses(text, lexicon):
        entities, active = _resolve(clause, active)
        found.extend(entities)
    return found
