"""Exercises of notebook 08 (extractive QA and summarization): windows, moved answer positions, padded targets.

Each ``solution_<name>`` computes the reference answer with the package (``prepare_qa`` itself,
``collate_labels`` / ``shift_positions``), so an answer key cannot drift from what the code does; each
``check_<name>(answer, ...)`` compares a learner's answer with it and returns a
:class:`~tdnotebooks.exercises.Feedback` whose hint names the rule to use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tdnotebooks.exercises import Feedback
from tdnotebooks.exercises import check_choice as _check_choice
from tdnotebooks.exercises import check_number as _check_number
from tdnotebooks.validation import check_int, is_int

__all__ = [
    "check_answer_start_after_drop", "check_ignored_targets", "check_num_windows", "check_padded_side",
    "solution_answer_start_after_drop", "solution_ignored_targets", "solution_num_windows",
    "solution_padded_side",
]

# The numbers the notebook asks about (the checks use them unless told otherwise).
WINDOW_QUESTION_TOKENS = 12   # question tokens, without [CLS] / [SEP]
WINDOW_CONTEXT_TOKENS = 1000  # context tokens
WINDOW_MAX_LENGTH = 384       # tokens per window, special tokens included
WINDOW_STRIDE = 128           # tokens two consecutive windows share
ANSWER_START = 57             # token position of the answer's first token in its window
DROPPED_SPANS = ((3, 4), (9, 11), (20, 21), (33, 34), (41, 43), (50, 51), (60, 62), (70, 71))  # [start, end)
TARGET_LENGTHS = (7, 5, 9, 6)  # label tokens of four targets (each ends with [SEP])
PADDED_SIDES = ("input_ids", "labels", "both", "neither")


# ------------------------------------------------------------------------------ Exercise 1: windows
def solution_num_windows(question_tokens: int = WINDOW_QUESTION_TOKENS, context_tokens: int = WINDOW_CONTEXT_TOKENS,
                         max_length: int = WINDOW_MAX_LENGTH, stride: int = WINDOW_STRIDE) -> int:
    """Features ``prepare_qa`` makes of one example with a question of ``question_tokens`` one-token words and a
    context of ``context_tokens`` one-token words, at ``max_length`` and ``stride``.

    Runs :func:`tdnotebooks.finetuning.qa.prepare_qa` itself on such an example (with the bundled tokenizer).
    """
    import datasets

    from tdnotebooks.finetuning.qa import prepare_qa
    from tdnotebooks.models import load_tokenizer

    check_int("question_tokens", question_tokens, low=1)
    check_int("context_tokens", context_tokens, low=1)
    example = datasets.Dataset.from_dict({"id": ["x"], "question": [" ".join(["who"] * question_tokens)],
                                          "context": [" ".join(["word"] * context_tokens)]})
    return len(prepare_qa(example, load_tokenizer(), max_length=max_length, stride=stride))


def check_num_windows(answer: Any, question_tokens: int = WINDOW_QUESTION_TOKENS,
                      context_tokens: int = WINDOW_CONTEXT_TOKENS, max_length: int = WINDOW_MAX_LENGTH,
                      stride: int = WINDOW_STRIDE) -> Feedback:
    """Exercise 1: how many windows (features) does ``prepare_qa`` cut a long context into?"""
    room = max_length - 3 - question_tokens
    return _check_number(
        answer, solution_num_windows(question_tokens, context_tokens, max_length, stride), "the number of windows",
        hint=f"Each window holds [CLS] question [SEP] context [SEP]: room for max_length - 3 - {question_tokens} = "
             f"{room} context tokens. The next window starts {room} - stride tokens further on (it repeats the last "
             "stride tokens of the previous one). Count windows until one reaches the end of the context.",
        abs_tol=0.5,
        explain="Every window repeats the question; the overlap (stride) means an answer near a window's edge is "
                "whole in the next one.")


# ------------------------------------------------------------------------------ Exercise 2: moved answer
def solution_answer_start_after_drop(start: int = ANSWER_START,
                                     dropped_spans: Sequence[Sequence[int]] = DROPPED_SPANS) -> int:
    """``start_positions`` after TokenDrop removed ``dropped_spans`` (``collate_labels`` moves it left)."""
    from tdnotebooks.finetuning.collate import collate_labels

    spans = [tuple(int(v) for v in span) for span in dropped_spans]
    example = {"start_positions": int(start), "end_positions": int(start)}
    return int(collate_labels([example], [spans])["start_positions"][0])


def check_answer_start_after_drop(answer: Any, start: int = ANSWER_START,
                                  dropped_spans: Sequence[Sequence[int]] = DROPPED_SPANS) -> Feedback:
    """Exercise 2: where is the answer's first token after the drop?"""
    return _check_number(
        answer, solution_answer_start_after_drop(start, dropped_spans), "the answer's start position after the drop",
        hint=f"Only the dropped tokens BEFORE position {start} move it: add up end - start of every span that ends "
             f"at or before {start}, and subtract. Spans after the answer change nothing.",
        abs_tol=0.5,
        explain="The collator moves start_positions and end_positions by the same rule; the answer's own tokens "
                "are never droppable, so the span stays whole.")


# ------------------------------------------------------------------------------ Exercise 3: padded targets
def solution_ignored_targets(target_lengths: Sequence[int] = TARGET_LENGTHS) -> int:
    """-100 entries of the ``labels`` tensor ``collate_labels`` builds for targets of these lengths."""
    from tdnotebooks.finetuning.collate import IGNORE_INDEX, collate_labels

    if len(target_lengths) == 0 or not all(is_int(n) and n >= 1 for n in target_lengths):
        raise ValueError(f"target_lengths must be a non-empty list of ints >= 1, got {target_lengths!r}")
    labels = collate_labels([{"labels": [5] * int(n)} for n in target_lengths])["labels"]
    return int((labels == IGNORE_INDEX).sum())


def check_ignored_targets(answer: Any, target_lengths: Sequence[int] = TARGET_LENGTHS) -> Feedback:
    """Exercise 3: how many -100 does the collated ``labels`` tensor of a batch hold?"""
    return _check_number(
        answer, solution_ignored_targets(target_lengths), "the number of -100 entries",
        hint="Targets are padded to the batch's LONGEST target with -100 (never trimmed: every summary token is "
             "kept). Sum, over the targets, longest - own length.",
        abs_tol=0.5,
        explain="The loss ignores -100; the model turns them into [PAD] when it shifts the labels into decoder "
                "inputs.")


# ------------------------------------------------------------------------------ Exercise 4: which side pads
def solution_padded_side(tokenizer: Any) -> str:
    """Which tensors of a TokenDrop + BucketSampler seq2seq batch still hold padding: collates a batch of two
    sources of one bucket with targets of different lengths, as ``finetune(method="tokendrop_bucket")`` does."""
    import datasets

    from tdnotebooks.finetuning.collate import IGNORE_INDEX
    from tdnotebooks.finetuning.seq2seq import prepare_seq2seq
    from tdnotebooks.finetuning.tokendrop import TokenDrop, TokenDropBucketCollator

    data = datasets.Dataset.from_dict({
        "document": ["HAMLET: The rest is silence, and the night is long.",
                     "HORATIO: Now cracks a noble heart; good night, sweet prince."],
        "summary": ["Speakers: HAMLET.", "Speakers: HORATIO, and the FIRST PLAYER of the court."]})
    rows = list(prepare_seq2seq(data, tokenizer))
    batch = TokenDropBucketCollator(TokenDrop(mode="to_length"), tokenizer.pad_token_id)(rows)
    encoder = bool((batch["attention_mask"] == 0).any())
    decoder = bool((batch["labels"] == IGNORE_INDEX).any())
    return {(True, True): "both", (True, False): "input_ids", (False, True): "labels",
            (False, False): "neither"}[encoder, decoder]


def check_padded_side(answer: Any, tokenizer: Any) -> Feedback:
    """Exercise 4: in a TokenDrop + BucketSampler summarization batch, which tensor still holds padding?"""
    if answer is not None and not isinstance(answer, str):
        return Feedback(False, f"answer one of {', '.join(map(repr, PADDED_SIDES))}, got {answer!r}")
    return _check_choice(
        answer, solution_padded_side(tokenizer), PADDED_SIDES, "'input_ids', 'labels', 'both' or 'neither'",
        hint="TokenDrop trims the encoder inputs (the sources) of a bucket to one width; does anything trim the "
             "targets? Every summary token must be predicted.",
        explain="The sources are trimmed to one width (no padding); the targets are padded with -100 (Table 2 of "
                "the paper: TokenDrop on the inputs only).")
