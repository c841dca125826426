"""The stopword list of Nagarajan & Raghunathan (2023, Appendix A), shared by both halves of the course.

TokenDrop (:mod:`tdnotebooks.finetuning.tokendrop`) drops these words; notebook 05 compares them with the
tokens that Hou et al.'s importance table ranks lowest.

Example:
    >>> from tdnotebooks.stopwords import STOPWORDS, stopword_set
    >>> "the" in stopword_set() and "not" not in stopword_set()
    True
"""

from __future__ import annotations

__all__ = ["PRONOUNS", "STOPWORDS", "stopword_set"]

STOPWORDS: tuple[str, ...] = (
    "i", "me", "my", "myself", "we", "our", "ours", "ourselves", "you", "you're", "you've", "you'll",
    "you'd", "your", "yours", "yourself", "yourselves", "he", "him", "his", "himself", "she", "she's",
    "her", "hers", "herself", "it", "it's", "its", "itself", "they", "them", "their", "theirs",
    "themselves", "what", "which", "who", "whom", "this", "that", "that'll", "these", "those", "am", "is",
    "are", "was", "were", "be", "been", "being", "have", "has", "had", "having", "do", "does", "did",
    "doing", "a", "an", "the", "and", "but", "if", "or", "because", "as", "until", "while", "of", "at",
    "by", "for", "with", "about", "against", "between", "into", "through", "during", "before", "after",
    "above", "below", "to", "from", "up", "down", "in", "out", "on", "off", "over", "under", "again",
    "further", "then", "once", "here", "there", "when", "where", "why", "how", "all", "any", "both",
    "each", "few", "more", "most", "other", "some", "such", "only", "own", "so", "than", "too", "very",
    "can", "will", "just", "should", "should've", "now", "-", ".", ";", "...", "(", ")",
)
"""The paper's list (Appendix A): NLTK's English stopwords up to "now", plus six punctuation marks.

Negations ("not", "no", "nor", "don't", ...) are not in it: dropping them would flip a sentence's meaning."""

PRONOUNS: tuple[str, ...] = STOPWORDS[:STOPWORDS.index("those") + 1]
"""The pronouns of the list (its first 44 entries: personal, possessive, reflexive, interrogative/relative
and demonstrative pronouns, with their contractions such as "it's" and "that'll"). The paper removes "all
pronouns" for tasks that are about pronouns, such as WNLI; this tuple is our reading of "all"."""


def stopword_set(keep_pronouns: bool = False) -> frozenset[str]:
    """The paper's stopwords as a set; ``keep_pronouns=True``: without the pronouns (WNLI-like tasks)."""
    if keep_pronouns:
        return frozenset(STOPWORDS) - frozenset(PRONOUNS)
    return frozenset(STOPWORDS)
