"""Degenerate drafts: a draft that cannot be used as one → its class, before any other flag (stage: infer).

Input: the draft text, its findings, and the completion's ``finish_reason`` when the drafter recorded one. Output: a
``DegenerateClass`` (empty, no content, template leak, truncated, repetition, findings copied) or None. Failure
modes: none (pure). English, Chinese and mixed text alike. Classes and thresholds: ops/consistency/README.md.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

from ops.consistency.measure import normalise, sentences
from schemas.consistency import DegenerateClass
from schemas.language import IDEOGRAPH, IDEOGRAPH_CLASS

# No standard defines a degenerate draft. The classes are the published failure modes of neural text generation:
# empty output and repetition loops under greedy decoding (Holtzman et al., "The Curious Case of Neural Text
# Degeneration", ICLR 2020; Welleck et al., "Neural Text Generation with Unlikelihood Training", ICLR 2020, whose
# seq-rep-n is the repeated n-gram share used here), prompt/template leakage and copying the input back (Perez &
# Ribeiro, "Ignore Previous Prompt", 2022; See et al., ACL 2017, on abstractive summarisers copying their source), and
# output cut at the token limit (OpenAI chat completions finish_reason "length").

MIN_WORD_LETTERS = 3  # an English word that says something ("no", "a", "ok", "1.", "b)" do not; "NAD" does)
MIN_CJK_CHARS = 2  # Chinese words are mostly two characters (正常, 积液): one alone ("无", "见") states nothing
REPEAT_MIN_SENTENCES = 3  # "A. A." may be a list's two sides; a loop shows from three sentences on
REPEAT_SENTENCE_SHARE = 0.5  # sentences repeating an earlier one: a per-site report repeats some (DXA fixture: 0.09)
REPEAT_N = 4  # seq-rep-4 (Welleck et al.): 4-grams of words, or of characters for Chinese
REPEAT_MIN_NGRAMS = 16  # a short draft cannot loop; below this a few shared phrases would dominate the share
REPEAT_SHARE = 0.5  # repeated 4-gram share: a loop tends to 1; the signed impressions in the repo stay below 0.2
COPY_MIN_FINDINGS_TOKENS = 20  # about three sentences: short findings ("Small left pleural effusion.") may be restated
COPY_SHARE = 0.9  # of the findings' tokens found again, in order, in the draft; and of the draft's, from the findings
LENGTH = "length"  # finish_reason of a completion stopped by max_tokens (OpenAI API; vLLM answers the same)

_TOKEN = re.compile(f"[a-z0-9]+|[{IDEOGRAPH_CLASS}]")
_WORD = re.compile(rf"[a-z]{{{MIN_WORD_LETTERS},}}")
_CJK = IDEOGRAPH  # schemas/language.py: the one answer to "is this Chinese?"
_MARKER = re.compile(r"^\s*(?:[-*•·]|\(?\d{1,2}[.)、:]|\(?[a-z][.)]|[一二三四五六七八九十]+[、.])\s*")
# What a chat template or one of the prompts in model/inference/templates leaves in a draft that repeats it: special
# tokens (Qwen/ChatML, Llama, GPT), the prompt's section headers at a line start, the system messages' opening words.
_LEAK = re.compile(
    r"<\|[a-z_]+\|>|</?s>|\[/?inst]|<<sys>>|</?think>"
    r"|(?m:^\s*(?:#+\s*)?(?:findings|impression|exam|house style)\s*[:：])"
    r"|检查所见\s*[:：]|诊断意见\s*[:：]|检查项目\s*[:：]|书写要求\s*[:：]"
    r"|you are an? (?:experienced )?[a-z/ ]*radiologist|write the impression for|summarise the findings as"
    r"|你是一名|请根据检查所见|请将检查所见")


def tokens(text: str) -> list[str]:
    """Words (lower-cased, NFKC) and single CJK characters: the units the thresholds count."""
    return _TOKEN.findall(normalise(text))


def degenerate(draft: str, findings: str = "", finish_reason: str = "") -> DegenerateClass | None:
    """The class of a draft nobody can use as an impression, or None for one that may be (the other flags judge)."""
    text = normalise(draft)
    if not text.strip():
        return DegenerateClass.EMPTY
    if _LEAK.search(text):
        return DegenerateClass.TEMPLATE_LEAK
    if not _content(text):
        return DegenerateClass.NO_CONTENT
    if repeated(text):  # before truncated: a loop runs to the token limit, and the loop is what went wrong
        return DegenerateClass.REPETITION
    if finish_reason == LENGTH:  # stopped by max_tokens: what it would have said next is missing (a list, a "not")
        return DegenerateClass.TRUNCATED
    if copied(text, normalise(findings)):
        return DegenerateClass.FINDINGS_COPIED
    return None


def _content(text: str) -> bool:
    """A word of ``MIN_WORD_LETTERS`` letters or ``MIN_CJK_CHARS`` Chinese characters: something stated."""
    return bool(_WORD.search(text)) or len(_CJK.findall(text)) >= MIN_CJK_CHARS


def repeat_share(text: str) -> float:
    """seq-rep-4: the share of the text's 4-grams that repeat an earlier one (0 when too short to tell)."""
    units = tokens(text)
    grams = [tuple(units[i:i + REPEAT_N]) for i in range(len(units) - REPEAT_N + 1)]
    return 1 - len(set(grams)) / len(grams) if len(grams) >= REPEAT_MIN_NGRAMS else 0.0


def repeated(text: str) -> bool:
    """A loop: half its sentences (list markers aside) repeat earlier ones, or most of its 4-grams do."""
    said = [" ".join(tokens(_MARKER.sub("", s))) for _, s in sentences(text) if _content(s)]
    again = len(said) - len(set(said))
    return (len(said) >= REPEAT_MIN_SENTENCES and again >= REPEAT_SENTENCE_SHARE * len(said)) or \
        repeat_share(text) > REPEAT_SHARE


def copied(draft: str, findings: str) -> bool:
    """The findings given back as the impression: nearly all of long findings, in order, and little else."""
    ours, theirs = tokens(draft), tokens(findings)
    if len(theirs) < COPY_MIN_FINDINGS_TOKENS or not ours:
        return False
    same = sum(b.size for b in SequenceMatcher(None, theirs, ours, autojunk=False).get_matching_blocks())
    return same >= COPY_SHARE * len(theirs) and same >= COPY_SHARE * len(ours)
