"""Lucene's English analysis, as pyserini's default analyzer runs it, in Python (no JVM).

The chain is anserini's ``DefaultEnglishAnalyzer``: ``StandardTokenizer`` (UAX#29 word
boundaries, tokens cut at 255 characters) -> ``EnglishPossessiveFilter`` -> ``LowerCaseFilter``
-> ``StopFilter`` (Lucene's 33 English stop words) -> ``PorterStemFilter``.

BRIGHT and TongSearch-QR score with tokens from that analyzer, so the embedded BM25 engine must
produce the very same tokens. ``tests/test_analyzer.py`` compares this module with pyserini's
analyzer on a large sample of real text wherever pyserini is installed.
"""

from __future__ import annotations

import functools
import re
from typing import Iterable

from .lazy import require

ENGLISH_STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their "
    "then there these they this to was will with".split()
)
MAX_TOKEN_LENGTH = 255
_APOSTROPHES = ("'", "\u2019", "\uff07")


def _token_pattern():
    regex = require("regex", "eval", "Lucene-compatible tokenization")
    ex = r"[\p{WB=Format}\p{WB=Extend}\p{WB=ZWJ}]*"  # UAX#29 WB4: these attach to what precedes
    letter = rf"[\p{{WB=ALetter}}\p{{WB=Hebrew_Letter}}]{ex}"
    hebrew = rf"\p{{WB=Hebrew_Letter}}{ex}"
    numeric = rf"\p{{WB=Numeric}}{ex}"
    katakana = rf"\p{{WB=Katakana}}{ex}"
    mid_letter = rf"[\p{{WB=MidLetter}}\p{{WB=MidNumLet}}\p{{WB=Single_Quote}}]{ex}"
    mid_num = rf"[\p{{WB=MidNum}}\p{{WB=MidNumLet}}\p{{WB=Single_Quote}}]{ex}"
    extend_num_let = rf"\p{{WB=ExtendNumLet}}{ex}"
    single_quote = rf"\p{{WB=Single_Quote}}{ex}"
    double_quote = rf"\p{{WB=Double_Quote}}{ex}"
    # A word is runs of letters and numbers (WB5-WB12), joined by connectors like '_' (WB13a/b).
    unit = (
        rf"(?:{katakana}(?:(?:{extend_num_let})*{katakana})*"
        rf"|(?:{hebrew}(?:{single_quote}|{double_quote}{hebrew})"
        rf"|{numeric}(?:(?:{extend_num_let})*{numeric}|{mid_num}{numeric})*"
        rf"|{letter}(?:(?:{extend_num_let})*{letter}|{mid_letter}{letter})*)+)"
    )
    word = rf"(?:{extend_num_let})*{unit}(?:(?:{extend_num_let})+{unit})*(?:{extend_num_let})*"
    # Emoji (Lucene 8+): flags are pairs of regional indicators; a lone one is dropped.
    pictograph = r"[[\p{Extended_Pictographic}\p{Emoji_Presentation}]--\p{Regional_Indicator}]"
    emoji_one = rf"{pictograph}[\p{{Emoji_Modifier}}\uFE0F\p{{WB=Extend}}]*"
    emoji = (
        rf"[0-9#*]\uFE0F?\u20E3|\p{{Regional_Indicator}}{{2}}|{emoji_one}(?:\u200D{emoji_one})*"
    )
    complex_context = rf"(?:\p{{Line_Break=Complex_Context}}{ex})+"
    single = rf"\p{{Script=Han}}{ex}|\p{{Script=Hiragana}}{ex}"
    return regex.compile(rf"{emoji}|{word}|{complex_context}|{single}", regex.VERSION1)


# The same grammar restricted to ASCII, where it is small enough for the standard `re` module
# and several times faster; most text takes this path.
_ASCII_WORD = re.compile(
    r"_*[A-Za-z0-9](?:[A-Za-z0-9_]|(?<=[A-Za-z])[:.'](?=[A-Za-z])|(?<=[0-9])[.,;'](?=[0-9]))*"
)


@functools.lru_cache(maxsize=1)
def _compiled():
    return _token_pattern()


def tokenize(text: str) -> list[str]:
    """Lucene ``StandardTokenizer``: UAX#29 words, numbers, emoji, single CJK characters."""
    if text.isascii():
        tokens = _ASCII_WORD.findall(text)
        if all(len(token) <= MAX_TOKEN_LENGTH for token in tokens):
            return tokens
        pattern = _ASCII_WORD
    else:
        pattern = _compiled()
    tokens = []
    position, end = 0, len(text)
    while position < end:
        match = pattern.search(text, position)
        if match is None:
            break
        start, stop = match.span()
        if stop - start > MAX_TOKEN_LENGTH:
            # Lucene cuts at the longest match that fits in its 255-character buffer.
            match = pattern.match(text, start, start + MAX_TOKEN_LENGTH)
            stop = match.end()
        tokens.append(text[start:stop])
        position = stop
    return tokens


def _lower(token: str) -> str:
    """Java's per-code-point ``Character.toLowerCase`` (no final sigma, no multi-char mappings)."""
    if token.isascii():
        return token.lower()
    return "".join(_lower_char(ch) for ch in token)


@functools.lru_cache(maxsize=4096)
def _lower_char(ch: str) -> str:
    lowered = ch.lower()
    return lowered if len(lowered) == 1 else lowered[0]


def _strip_possessive(token: str) -> str:
    if len(token) >= 2 and token[-1] in "sS" and token[-2] in _APOSTROPHES:
        return token[:-2]
    return token


@functools.lru_cache(maxsize=1)
def _porter():
    stem = require("nltk.stem.porter", "eval", "Porter stemming")
    # Martin Porter's own implementation, which Lucene's PorterStemmer follows.
    return stem.PorterStemmer(mode=stem.PorterStemmer.MARTIN_EXTENSIONS)


class LuceneEnglishAnalyzer:
    """Callable ``text -> tokens``; stems are memoised because vocabularies repeat."""

    name = "lucene-english-porter"

    _MEMO_LIMIT = 2_000_000

    def __init__(self, stopwords: Iterable[str] = ENGLISH_STOP_WORDS, stem: bool = True):
        self.stopwords = frozenset(stopwords)
        self.stem = stem
        self._memo: dict[str, str | None] = {}  # raw token -> term, or None for a stop word

    def __call__(self, text: str) -> list[str]:
        return self.analyze(text)

    def analyze(self, text: str) -> list[str]:
        memo = self._memo
        if len(memo) > self._MEMO_LIMIT:
            memo.clear()
        out = []
        for raw in tokenize(text):
            try:
                term = memo[raw]
            except KeyError:
                term = memo[raw] = self._filter(raw)
            if term is not None:
                out.append(term)
        return out

    def _filter(self, raw: str) -> str | None:
        token = _lower(_strip_possessive(raw))
        if token in self.stopwords:
            return None
        if self.stem and len(token) > 2:
            return _porter().stem(token, to_lowercase=False)
        return token

    def settings(self) -> dict:
        """What changes the tokens: part of an index's cache key."""
        return {"analyzer": self.name, "stopwords": sorted(self.stopwords), "stem": self.stem}
