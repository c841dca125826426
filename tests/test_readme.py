"""README.md's code runs as written, so the README cannot drift from the API.

How the README is executed:

- Every fenced ```` ```python ```` block is one test, run in README order. The blocks of one ``##`` section
  share a namespace (a later block may use what an earlier one of its section defined, as a reader running
  them one after another would); each section starts from a fresh namespace in its own temporary working
  directory, so files a block writes (checkpoints, saved models) land there. Selecting one block alone
  (``-k``) first runs the earlier blocks of its section.
- Offline: the ``tdnotebooks.testing`` plugin sets ``HF_HUB_OFFLINE=1`` before anything imports Hugging Face
  code, and while a block runs every socket connection or name lookup beyond this machine is refused and
  fails the test, so only the bundled data and model can be used.
- A block that cannot run here is marked on the line directly above its fence with
  ``<!-- readme-test: skip (REASON) -->``; REASON is one of :data:`SKIP_REASONS` and the test is skipped with
  that reason. A marker with any other reason or spelling, or one not directly above a ``python`` fence,
  fails :func:`test_skip_markers_are_known_and_placed`. Skipped blocks must still compile.
- Other code blocks (bash) are not executed. Every ``python -m tdnotebooks...`` in the README (in a block or
  in prose) must name a runnable module, every dotted ``tdnotebooks.`` name must import or resolve to an
  attribute, and every ``tdnotebooks/`` or ``notebooks/`` path must exist.
- "How the package is organised" names every module of the two subpackages, in the reading order of the
  subpackage's docstring, and every other module of ``tdnotebooks/``.

Keep README blocks tiny (a few examples, one or two epochs, a few steps): each runs in seconds on a 2-core CPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import pkgutil
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

SKIP_REASONS = {
    "online": "needs the internet (Hugging Face hub names); the tests run offline",
    "gpu": "needs a CUDA GPU",
    "slow": "takes longer than a unit test may (more than ~20 s on a 2-core CPU)",
}
MARKER = re.compile(r"<!-- readme-test: skip \((?P<reason>[^()]*)\) -->")
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)\s*$")


@dataclass
class Block:
    section: str
    lang: str
    line: int  # 1-based line number of the opening fence
    source: str
    skip: str | None = None  # the marker's reason

    @property
    def id(self) -> str:
        return f"L{self.line}-{re.sub(r'[^a-z0-9]+', '-', self.section.lower()).strip('-')}"


@dataclass
class Marker:
    line: int
    text: str
    reason: str | None  # None: not of the form <!-- readme-test: skip (REASON) -->


def parse(text: str) -> tuple[list[Block], list[Marker]]:
    """The fenced code blocks of a Markdown text (with their ``##`` section and skip marker), and every
    ``<!-- ... readme-test ... -->`` line. Raises ValueError on an unclosed fence."""
    blocks: list[Block] = []
    markers: list[Marker] = []
    section = "(top)"
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("<!--") and "readme-test" in stripped:
            match = MARKER.fullmatch(stripped)
            markers.append(Marker(i + 1, stripped, match["reason"] if match else None))
        elif line.startswith("## "):
            section = line[3:].strip()
        elif (fence := FENCE.match(line)) is not None:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), None)
            if end is None:
                raise ValueError(f"README.md:{i + 1}: unclosed code fence")
            above = lines[i - 1].strip() if i else ""
            marker = MARKER.fullmatch(above)
            blocks.append(Block(section, fence["lang"], i + 1, "\n".join(lines[i + 1:end]) + "\n",
                                marker["reason"] if marker else None))
            i = end
        i += 1
    return blocks, markers


TEXT = README.read_text(encoding="utf-8")
BLOCKS, MARKERS = parse(TEXT)
PYTHON_BLOCKS = [b for b in BLOCKS if b.lang == "python"]


def test_readme_has_python_blocks_to_run():
    assert len([b for b in PYTHON_BLOCKS if b.skip is None]) >= 3, "the parser found (almost) no README code"


def test_skip_markers_are_known_and_placed():
    fences = {b.line: b for b in BLOCKS}
    problems = []
    for marker in MARKERS:
        block = fences.get(marker.line + 1)
        if marker.reason is None:
            problems.append(f"README.md:{marker.line}: malformed marker {marker.text!r}; write "
                            "'<!-- readme-test: skip (REASON) -->'")
        elif marker.reason not in SKIP_REASONS:
            problems.append(f"README.md:{marker.line}: unknown skip reason {marker.reason!r}; "
                            f"known: {', '.join(SKIP_REASONS)}")
        if block is None or block.lang != "python":
            problems.append(f"README.md:{marker.line}: a readme-test marker must be directly above a "
                            "```python fence")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.id for b in PYTHON_BLOCKS])
def test_python_block_compiles(block: Block):
    compile(_numbered(block), str(README), "exec")


# ----------------------------------------------------------------------------------------------------------
# Executing the blocks
# ----------------------------------------------------------------------------------------------------------


@dataclass
class SectionState:
    cwd: Path
    namespace: dict = field(default_factory=lambda: {"__name__": "__readme__"})
    done: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)


_SECTIONS: dict[str, SectionState] = {}


def _numbered(block: Block) -> str:
    """The block's source shifted so that tracebacks show README.md's own line numbers."""
    return "\n" * block.line + block.source


def _is_local(host: object) -> bool:
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture
def no_network(monkeypatch):
    """Refuse (and record) every connection or name lookup beyond this machine while a block runs."""
    attempts: list[str] = []
    real_connect, real_connect_ex, real_getaddrinfo = (socket.socket.connect, socket.socket.connect_ex,
                                                       socket.getaddrinfo)

    def refuse(what: str) -> OSError:
        attempts.append(what)
        return ConnectionRefusedError(f"tests/test_readme.py: README code may not use the network ({what})")

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            raise refuse(f"connect to {address[0]}:{address[1]}")
        return real_connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            raise refuse(f"connect to {address[0]}:{address[1]}")
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_local(host.decode() if isinstance(host, bytes) else host):
            raise refuse(f"look up {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts
    assert not attempts, f"README code tried to reach the network: {'; '.join(attempts)}"


def _run(block: Block, state: SectionState) -> None:
    try:
        exec(compile(_numbered(block), str(README), "exec"), state.namespace)  # noqa: S102
    except BaseException:
        state.failed.add(block.line)
        raise
    state.done.add(block.line)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.id for b in PYTHON_BLOCKS])
def test_python_block_runs(block: Block, no_network, tmp_path_factory, monkeypatch):
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE, "run through pytest (the tdnotebooks.testing plugin)"
    if block.skip is not None:
        reason = SKIP_REASONS.get(block.skip, "unknown reason, see test_skip_markers_are_known_and_placed")
        pytest.skip(f"README.md:{block.line} is marked skip ({block.skip}): {reason}")
    state = _SECTIONS.get(block.section)
    if state is None:
        state = _SECTIONS[block.section] = SectionState(tmp_path_factory.mktemp("readme"))
    monkeypatch.chdir(state.cwd)
    for earlier in PYTHON_BLOCKS:
        if earlier is block:
            break
        if earlier.section != block.section or earlier.skip is not None or earlier.line in state.done:
            continue
        if earlier.line in state.failed:
            pytest.fail(f"the block at README.md:{earlier.line} of this section failed (see its test)")
        _run(earlier, state)
    _run(block, state)
    assert not no_network, f"README code tried to reach the network: {'; '.join(no_network)}"


# ----------------------------------------------------------------------------------------------------------
# Names, paths and commands in prose and bash blocks
# ----------------------------------------------------------------------------------------------------------

DOTTED = sorted(set(re.findall(r"(?<![\w/.-])tdnotebooks(?:\.[A-Za-z_]\w*)+", TEXT)))
PATHS = sorted(set(re.findall(r"(?<![\w/.-])(?:tdnotebooks|notebooks)/[\w./-]*", TEXT)))
COMMANDS = sorted(set(re.findall(r"\bpython -m ((?:tdnotebooks)(?:\.\w+)*)", TEXT)))


def test_readme_names_resolve():
    """Every ``tdnotebooks.x.y`` the README names is a module, or an attribute of the longest module prefix."""
    assert DOTTED, "no tdnotebooks.* names found"
    missing = []
    for name in DOTTED:
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append(name)
            break
    assert not missing, f"README names that do not exist: {', '.join(missing)}"


def test_readme_paths_exist():
    missing = [path for path in PATHS if not (ROOT / path).exists()]
    assert not missing, f"README paths that do not exist: {', '.join(missing)}"


def test_readme_commands_name_runnable_modules():
    """``python -m X`` needs X to be a module, or a package with a ``__main__`` (found, not run)."""
    assert "tdnotebooks.pretraining" in COMMANDS, "the pretraining command line is no longer documented"
    broken = []
    for name in COMMANDS:
        spec = importlib.util.find_spec(name)
        if spec is None:
            broken.append(f"{name} (no such module)")
        elif spec.submodule_search_locations is not None and importlib.util.find_spec(f"{name}.__main__") is None:
            broken.append(f"{name} (a package without __main__)")
    assert not broken, f"README commands that cannot run: {', '.join(broken)}"


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", TEXT, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match[1]


def _modules(package: Path) -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(package)]) if not m.name.startswith("__"))


@pytest.mark.parametrize("half", ["finetuning", "pretraining"])
def test_package_layout_lists_each_half_in_reading_order(half):
    """The README's reading path of a subpackage: all its modules, in the order of its docstring."""
    section = _section("How the package is organised")
    bullet = re.search(rf"^- \*\*`tdnotebooks\.{half}`\*\*(.*?)(?=^\S|\Z)", section, re.M | re.S)
    assert bullet, f"no bullet for tdnotebooks.{half}"
    modules = _modules(ROOT / "tdnotebooks" / half)
    named = list(dict.fromkeys(m for m in re.findall(r"`(\w+)`", bullet[1]) if m in modules))
    docstring = importlib.import_module(f"tdnotebooks.{half}").__doc__
    order = list(dict.fromkeys(re.findall(rf"tdnotebooks\.{half}\.(\w+)", docstring)))
    assert sorted(named) == modules, f"tdnotebooks.{half}: README names {named}, the package has {modules}"
    assert named == [m for m in order if m in named], f"README order {named}, docstring order {order}"


def test_package_layout_lists_every_supporting_module():
    section = _section("How the package is organised")
    named = set(re.findall(r"`(?:tdnotebooks\.)?(\w+)`", section))
    missing = [m for m in _modules(ROOT / "tdnotebooks") if m not in named]
    assert not missing, f"tdnotebooks modules the README's layout section does not name: {', '.join(missing)}"
