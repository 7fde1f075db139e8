"""Measurements in report text: number + unit ("4.1 x 3.2 cm", "10-mm", "约8mm", "1.2×0.8厘米", "SUVmax 8.9").

Input: an impression or findings text (English, Chinese or mixed). Output: ``Measurement``s in text order, values in
one unit per dimension (length in mm, volume in ml, SUV as is), and the sentences they stand in. Failure modes: none;
a number without a unit is not a measurement. Rules: ops/consistency/README.md.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import NamedTuple

_NUM = r"\d+(?:\.\d+)?"
# unit → (dimension, factor to the dimension's unit)
_UNITS = {"mm": ("length", 1.0), "cm": ("length", 10.0), "毫米": ("length", 1.0), "厘米": ("length", 10.0),
          "ml": ("volume", 1.0), "cc": ("volume", 1.0), "毫升": ("volume", 1.0)}
_UNIT = "(?:" + "|".join(sorted(_UNITS, key=len, reverse=True)) + ")"
# dimensions ("4.1 x 3.2", "4 by 3", "1.2×0.8", "1.2*0.8") and ranges ("3-4", "3 to 4", "3至4") share one unit
_JOIN = r"\s*(?:x|×|\*|by|-|–|~|to|至|到)\s*"
_MEASURE = re.compile(
    rf"(?<![\d.a-z])({_NUM}(?:\s*{_UNIT})?(?:{_JOIN}{_NUM}(?:\s*{_UNIT})?)*)\s*-?\s*({_UNIT})(?![a-z])")
_PART = re.compile(rf"({_NUM})\s*({_UNIT})?")
# SUV is unitless but a measurement all the same ("SUVmax 8.9", "SUV max of 3.8", "SUVmax约3.8")
_SUV = re.compile(rf"(?<![a-z])suv\s*(?:max|mean|peak)?\D{{0,6}}?({_NUM})")
# sentence ends: . ; ! ? 。 and new lines, a dot between digits being a decimal point (as ops/metrics/entities.py)
_SENTENCE = re.compile(r"[;!?。\n]|(?<!\d)\.|\.(?!\d)")


class Measurement(NamedTuple):
    text: str  # as written (NFKC-normalised, lower-cased)
    dimension: str  # "length" | "volume" | "suv"
    values: tuple[float, ...]  # in mm / ml / SUV, rounded to 1e-6
    start: int  # offset in the normalised text


def normalise(text: str) -> str:
    """The text as matched: NFKC (full-width １２ｍｍ = 12mm) and lower-cased, like the entity recogniser."""
    return unicodedata.normalize("NFKC", text).lower()


def measurements(text: str) -> list[Measurement]:
    """Every measurement of ``text``, in text order."""
    text = normalise(text)
    found: list[Measurement] = []
    for match in _MEASURE.finditer(text):
        unit = match.group(2)
        values = []
        for part in _PART.finditer(match.group(1)):
            dimension, factor = _UNITS[part.group(2) or unit]
            if dimension != _UNITS[unit][0]:
                continue  # "5 ml to 3 cm": only the parts in the final unit's dimension
            values.append(round(float(part.group(1)) * factor, 6))
        found.append(Measurement(match.group(0).strip(), _UNITS[unit][0], tuple(values), match.start()))
    for match in _SUV.finditer(text):
        found.append(Measurement(match.group(0).strip(), "suv", (round(float(match.group(1)), 6),), match.start()))
    return sorted(found, key=lambda m: m.start)


def contained(draft: Measurement, findings: list[Measurement]) -> bool:
    """Every value of the draft's measurement is a value the findings give in the same dimension (any unit)."""
    given = [v for m in findings if m.dimension == draft.dimension for v in m.values]
    return all(any(math.isclose(value, other, abs_tol=1e-6) for other in given) for value in draft.values)


def sentences(text: str) -> list[tuple[int, str]]:
    """(start offset, sentence) of the normalised text, for finding which sentence a measurement stands in."""
    text, out, start = normalise(text), [], 0
    for stop in _SENTENCE.finditer(text):
        out.append((start, text[start:stop.start()]))
        start = stop.end()
    out.append((start, text[start:]))
    return [(s, t) for s, t in out if t.strip()]
