"""The Python Lucene analyzer against pyserini's (the reference), and known Lucene behaviours."""

from __future__ import annotations

import pytest

from tests.conftest import SHARED_REWRITES, published_texts, skip_unless

pytest.importorskip("regex", reason="the analyzer needs the 'eval' extra")
from tsqr_plugins.analyzer import LuceneEnglishAnalyzer, tokenize  # noqa: E402

# Outputs recorded from pyserini 0.25's default analyzer (Lucene 9.9).
KNOWN = {
    "U.S.A. don't John's os.path.join foo_bar a-b": ["u.s.a", "don't", "john", "os.path.join", "foo_bar", "b"],
    "3.14 1,000 abc1.5 v1.2.3 a:b 12:30 3'4 1.2.3.4": ["3.14", "1,000", "abc1.5", "v1.2.3", "a:b", "12", "30", "3'4", "1.2.3.4"],
    "© ® ™ 😀 👍🏽 #1 *2 🇺🇸 🇺 x² ½": ["©", "®", "™", "😀", "👍🏽", "1", "2", "🇺🇸", "x"],
    "naïve café 東京 ひらがな カタカナ 한국어 ไทย _x_ __ e.g.": ["naïv", "café", "東", "京", "ひ", "ら", "が", "な", "カタカナ", "한국어", "ไทย", "_x_", "e.g"],
    "The Running runs ponies generalizations O'Neil's rock'n'roll": ["run", "run", "poni", "gener", "o'neil", "rock'n'rol"],
    "x_1^2 $x$ \\frac{a}{b} http://example.com/path?q=1": ["x_1", "2", "x", "frac", "b", "http", "example.com", "path", "q", "1"],
}


@pytest.mark.parametrize("text", sorted(KNOWN))
def test_known_lucene_outputs(text):
    assert LuceneEnglishAnalyzer()(text) == KNOWN[text]


def test_tokens_longer_than_255_characters_are_cut_like_lucene():
    assert [len(t) for t in tokenize("a" * 300 + " end")] == [255, 45, 3]
    assert [len(t) for t in tokenize("é" * 300)] == [255, 45]


def test_stop_words_and_short_words():
    analyzer = LuceneEnglishAnalyzer()
    assert analyzer("it is the end of an era") == ["end", "era"]
    assert analyzer("") == [] and analyzer("  \n\t ") == []
    assert LuceneEnglishAnalyzer(stem=False)("Running runs") == ["running", "runs"]


def test_equal_to_pyserini_on_every_published_query_and_rewrite(pyserini_analyzer):
    skip_unless(SHARED_REWRITES.is_dir(), f"the published rewrites are not at {SHARED_REWRITES}")
    texts = published_texts()
    texts.append("İstanbul ΣΟΦΟΣ 1️⃣ 👨‍👩‍👧 ✔️ ❤ Ａｂｃ１２３ ﬁne Straße")
    ours = LuceneEnglishAnalyzer()
    mismatches = [(t[:80], pyserini_analyzer.analyze(t), ours(t)) for t in texts
                  if pyserini_analyzer.analyze(t) != ours(t)]
    assert len(texts) > 3000
    assert mismatches == [], mismatches[:3]
