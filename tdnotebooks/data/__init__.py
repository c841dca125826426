"""Bundled, offline data as ``datasets.DatasetDict`` — and hub data sets through the same API.

    >>> from tdnotebooks.data import load_task, load_corpus, tokenize
    >>> rt = load_task("rt_sentiment")          # train / dev / test, columns text, label, score
    >>> corpus = load_corpus("shakespeare")     # train / dev, column text (+ work)
    >>> qa = load_task("shakespeare_qa")        # SQuAD-format "who says this line?" QA, train / dev
    >>> cast = load_task("shakespeare_cast")    # seq2seq document -> summary (XSum's columns), train / dev
    >>> task_spec("shakespeare_qa").kind        # "classification" | "extractive_qa" | "seq2seq"
    >>> rt = tokenize(rt, tokenizer)            # adds input_ids, attention_mask, length

Bundled names need no network. Hub names (``"glue/sst2"``, ``"glue/mrpc"``, ``"squad"``, ``"xsum"``,
``"cnn_dailymail"``, any ``"owner/dataset"`` or ``"owner/dataset:config"``) are loaded with :func:`datasets.load_dataset` when the hub can be
reached, and fail within seconds with a clear message when it cannot. How the bundled files were
made, their licences and counts: ``DATA.md`` beside this file; rebuild them with
``python -m tdnotebooks.data.build``.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "BUNDLED_CORPORA", "BUNDLED_TASKS", "GLUE_TASKS", "HUB_TASKS", "TASK_KINDS", "HubUnavailableError", "TaskSpec",
    "check_corpus_name",
    "ensure_hub_reachable", "hub_offline", "load_corpus", "load_task", "task_spec", "tokenize",
]

DATA_DIR = Path(__file__).resolve().parent


TASK_KINDS = ("classification", "extractive_qa", "seq2seq")


@dataclass(frozen=True)
class TaskSpec:
    """What a task looks like: its kind, which columns hold the input text and which the target.

    ``kind``: ``"classification"`` (``text_fields`` -> ``label``, ``num_labels`` classes; 1 = regression),
    ``"extractive_qa"`` (``("question", "context")`` -> ``answers``, SQuAD's struct of ``text`` and
    ``answer_start`` lists; ``num_labels`` 0) or ``"seq2seq"`` (``("document",)`` -> ``summary``; ``num_labels`` 0).
    """

    name: str
    text_fields: tuple[str, ...]
    num_labels: int
    label_names: tuple[str, ...] = ()
    description: str = ""
    kind: str = "classification"
    target_field: str = "label"


BUNDLED_TASKS: dict[str, TaskSpec] = {
    "rt_sentiment": TaskSpec(
        "rt_sentiment", ("text",), 2, ("negative", "positive"),
        "10,072 Rotten Tomatoes snippets with mean human sentiment scores (SST-like); near-neutral dropped",
    ),
    "reviews_long": TaskSpec(
        "reviews_long", ("text",), 2, ("negative", "positive"),
        "1,946 Amazon-review and NYT-editorial passages of 1-16 sentences: a long tail of lengths",
    ),
    "shakespeare_qa": TaskSpec(
        "shakespeare_qa", ("question", "context"), 0, (),
        "6,081 SQuAD-format 'who says this line?' questions on Shakespeare dialogue excerpts; 3 plays held out",
        kind="extractive_qa", target_field="answers",
    ),
    "shakespeare_cast": TaskSpec(
        "shakespeare_cast", ("document",), 0, (),
        "6,059 Shakespeare dialogue excerpts -> 'Speakers: A, B.' (an extractive-summary proxy); 3 plays held out",
        kind="seq2seq", target_field="summary",
    ),
}
_SPLITS = {"classification": ("train", "dev", "test"), "extractive_qa": ("train", "dev"), "seq2seq": ("train", "dev")}
BUNDLED_CORPORA: dict[str, str] = {
    "shakespeare": "29,811 passages (speeches and stanzas) of Shakespeare's works; 4 works held out as dev",
    "kjv": "1,189 chapters of the King James Bible; 4 books held out as dev",
}

# GLUE through the hub: (dataset id, config) -> text columns, number of labels (1 = regression).
GLUE_TASKS: dict[str, tuple[tuple[str, ...], int]] = {
    "cola": (("sentence",), 2),
    "sst2": (("sentence",), 2),
    "mrpc": (("sentence1", "sentence2"), 2),
    "qqp": (("question1", "question2"), 2),
    "stsb": (("sentence1", "sentence2"), 1),
    "mnli": (("premise", "hypothesis"), 3),
    "qnli": (("question", "sentence"), 2),
    "rte": (("sentence1", "sentence2"), 2),
    "wnli": (("sentence1", "sentence2"), 2),
}


# Named QA / seq2seq tasks on the hub: name -> (dataset id, config, column renames, TaskSpec).
HUB_TASKS: dict[str, tuple[str, str | None, dict[str, str], TaskSpec]] = {
    "squad": ("rajpurkar/squad", None, {}, TaskSpec(
        "squad", ("question", "context"), 0, (), "SQuAD v1.1 (hub: rajpurkar/squad)",
        kind="extractive_qa", target_field="answers")),
    "xsum": ("EdinburghNLP/xsum", None, {}, TaskSpec(
        "xsum", ("document",), 0, (), "XSum one-sentence BBC summaries (hub: EdinburghNLP/xsum)",
        kind="seq2seq", target_field="summary")),
    "cnn_dailymail": ("abisee/cnn_dailymail", "3.0.0", {"article": "document", "highlights": "summary"}, TaskSpec(
        "cnn_dailymail", ("document",), 0, (), "CNN/DailyMail 3.0.0, article/highlights renamed document/summary",
        kind="seq2seq", target_field="summary")),
}


class HubUnavailableError(RuntimeError):
    """A hub name was asked for but the hub cannot be reached (or HF_HUB_OFFLINE is set)."""


# ----------------------------------------------------------------------------- bundled files
@cache
def _read_records(name: str) -> tuple[dict, ...]:
    path = DATA_DIR / f"{name}.jsonl.gz"
    if not path.exists():
        raise FileNotFoundError(
            f"bundled data file {path} is missing; reinstall tdnotebooks or rebuild it with "
            "`python -m tdnotebooks.data.build`"
        )
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f)


def _to_dataset_dict(records: tuple[dict, ...], splits: tuple[str, ...], label_names: tuple[str, ...] = ()):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

    dtype = {int: "int64", float: "float64", str: "string"}
    features = Features({k: Value(dtype[type(v)]) for k, v in records[0].items() if k not in ("split", "answers")})
    if "answers" in records[0]:  # SQuAD's feature: a struct of lists, as the hub's squad loads
        features["answers"] = Sequence({"text": Value("string"), "answer_start": Value("int32")})
    if label_names:
        features["label"] = ClassLabel(names=list(label_names))
    out = {}
    for split in splits:
        rows = [{k: v for k, v in r.items() if k != "split"} for r in records if r["split"] == split]
        out[split] = Dataset.from_list(rows, features=features)
    return DatasetDict(out)


# ----------------------------------------------------------------------------- hub access
def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or HF_DATASETS_OFFLINE / TRANSFORMERS_OFFLINE) is set to a true value."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(n, "").strip().lower() in ("1", "true", "yes", "on") for n in names)


def ensure_hub_reachable(what: str, timeout: float = 3.0) -> None:
    """Fail fast (seconds, not the ~45 s of retries) when ``what`` needs the hub and it is not there.

    With HF_HUB_OFFLINE set nothing is contacted: the caller then tries the local cache only.
    """
    if hub_offline():
        return
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as exc:
        raise HubUnavailableError(
            f"{what} needs the Hugging Face hub, which cannot be reached from here ({exc}). "
            f"Use a bundled name instead ({', '.join([*BUNDLED_TASKS, *BUNDLED_CORPORA])}), "
            "or set HF_HUB_OFFLINE=1 to use only what is already in your local cache."
        ) from exc


def _load_hub_dataset(dataset_id: str, config: str | None, renames: dict[str, str] | None = None):
    import datasets

    ensure_hub_reachable(f"data set {dataset_id!r}")
    try:
        ds = datasets.load_dataset(dataset_id, config)
    except Exception as exc:  # datasets raises many types; the message is what matters to the user
        mode = "offline (HF_HUB_OFFLINE is set) and not in the local cache" if hub_offline() else "not loadable"
        raise HubUnavailableError(f"data set {dataset_id!r} (config {config!r}) is {mode}: {exc}") from exc
    if "validation" in ds and "dev" not in ds:
        ds["dev"] = ds.pop("validation")
    if renames:
        ds = ds.rename_columns(renames)
    return ds


# ----------------------------------------------------------------------------- public API
def task_spec(name: str) -> TaskSpec:
    """The :class:`TaskSpec` (kind, text and target columns) of a bundled task, a named hub task (``"squad"``,
    ``"xsum"``, ``"cnn_dailymail"``) or a ``glue/<task>`` name."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if name in BUNDLED_TASKS:
        return BUNDLED_TASKS[name]
    if name in HUB_TASKS:
        return HUB_TASKS[name][3]
    if name.startswith("glue/") and name.split("/", 1)[1] in GLUE_TASKS:
        fields, num_labels = GLUE_TASKS[name.split("/", 1)[1]]
        return TaskSpec(name, fields, num_labels)
    raise ValueError(
        f"name={name!r} is not a known task; allowed: bundled {sorted(BUNDLED_TASKS)}, "
        f"hub {sorted(HUB_TASKS)}, or glue/<task> with task in {sorted(GLUE_TASKS)}"
    )


def load_task(name: str) -> Any:
    """A labelled task as a ``DatasetDict``; what kind of task it is: :func:`task_spec`.

    Bundled classification (``train``, ``dev``, ``test``): ``"rt_sentiment"`` (columns text, label, score) and
    ``"reviews_long"`` (text, label, score, source, n_sentences). Bundled extractive QA (``train``, ``dev``):
    ``"shakespeare_qa"`` (id, title, context, question, answers: SQuAD's format). Bundled seq2seq (``train``,
    ``dev``): ``"shakespeare_cast"`` (id, work, document, summary). Online: ``"squad"`` (rajpurkar/squad),
    ``"xsum"`` (EdinburghNLP/xsum), ``"cnn_dailymail"`` (abisee/cnn_dailymail 3.0.0, article/highlights
    renamed document/summary), ``"glue/<task>"`` (GLUE's test labels are hidden, -1) or any
    ``"owner/dataset[:config]"``; a hub ``validation`` split is renamed ``dev``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if name in BUNDLED_TASKS:
        spec = BUNDLED_TASKS[name]
        return _to_dataset_dict(_read_records(name), _SPLITS[spec.kind], spec.label_names)
    if name in HUB_TASKS:
        dataset_id, config, renames, _ = HUB_TASKS[name]
        return _load_hub_dataset(dataset_id, config, renames)
    if name.startswith("glue/"):
        task = name.split("/", 1)[1]
        task_spec(name)  # validates the GLUE task name
        return _load_hub_dataset("nyu-mll/glue", task)
    if "/" in name:
        dataset_id, _, config = name.partition(":")
        return _load_hub_dataset(dataset_id, config or None)
    task_spec(name)  # raises the "not a known task" error
    raise AssertionError("unreachable")


def load_corpus(name: str) -> Any:
    """An unlabelled pretraining corpus as a ``DatasetDict`` with ``train`` and ``dev`` (column ``text``).

    Bundled: ``"shakespeare"`` (one passage per row; column ``work``), ``"kjv"`` (one chapter per row;
    ``book``, ``chapter``). Online: any ``"owner/dataset[:config]"`` with a ``text`` column.
    """
    check_corpus_name(name)
    if name in BUNDLED_CORPORA:
        return _to_dataset_dict(_read_records(name), ("train", "dev"))
    dataset_id, _, config = name.partition(":")
    return _load_hub_dataset(dataset_id, config or None)


def check_corpus_name(name: Any, *, name_of: str = "name") -> str:
    """``name`` if :func:`load_corpus` accepts it (a bundled corpus or an ``owner/dataset`` hub id), checked
    without loading anything; else a ValueError naming the argument (``name_of``)."""
    if name in BUNDLED_CORPORA or (isinstance(name, str) and "/" in name):
        return name
    raise ValueError(
        f"{name_of}={name!r} is not a known corpus; allowed: {sorted(BUNDLED_CORPORA)} or an 'owner/dataset' hub id"
    )


def tokenize(data: Any, tokenizer: Any, text_fields: tuple[str, ...] | None = None,
             max_length: int | None = 128, truncation: bool = True) -> Any:
    """Tokenize a ``Dataset``/``DatasetDict`` and add a ``length`` column (tokens incl. special ones).

    ``text_fields``: one column, or two for sentence pairs; default ``("text",)``. No padding here:
    padding is decided per batch by the collator, which is the whole point of the course.
    """
    fields = tuple(text_fields or ("text",))
    if not 1 <= len(fields) <= 2:
        raise ValueError(f"text_fields must name 1 or 2 columns, got {fields!r}")
    from tdnotebooks.checks import check_max_length

    check_max_length(max_length, tokenizer, pair=len(fields) == 2)
    columns = data.column_names
    present = columns if isinstance(columns, list) else next(iter(columns.values()))
    missing = [f for f in fields if f not in present]
    if missing:
        raise ValueError(f"text_fields {missing} not in the data set's columns {present}")

    def encode(batch: dict) -> dict:
        enc = tokenizer(*[batch[f] for f in fields], truncation=truncation and max_length is not None,
                        max_length=max_length)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    return data.map(encode, batched=True, desc=None)
