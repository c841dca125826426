"""Build the course as a static web site: the executed notebooks, readable without running them.

    python -m tdnotebooks.site                 # -> build/site/index.html (open it, or serve the folder)

What it does, in order:

1. Takes every ``notebooks/NN_*.ipynb`` executed: the copy the test run left in ``build/executed/``
   (``pytest`` writes one per notebook that ran to its end, see :mod:`tdnotebooks.testing`) when it is newer
   than the notebook, otherwise it executes the notebook here with nbclient (``TDN_SIZE`` as set; small by
   default), keeping the widgets' state so they show in their default position.
2. Makes each plotly figure a self-contained HTML snippet that loads ``assets/plotly.min.js`` from the
   site itself (copied from the installed plotly package): the pages draw their figures offline.
3. Writes a landing page (the notebook list and the glossary) and an mkdocs configuration next to the
   pages, and runs ``mkdocs build --strict`` with the mkdocs-jupyter plugin (material theme, no web fonts).

Nothing is written outside ``build/``; the built site is not committed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "executed_dir", "notebook_paths", "execute_notebook", "executed_copy", "plotly_outputs_to_html",
    "mkdocs_config", "build_site", "readme_section", "main",
]

PLOTLY_MIME = "application/vnd.plotly.v1+json"
PLOTLY_JS = "assets/plotly.min.js"
NOTEBOOK_NAME = re.compile(r"^\d\d_.+\.ipynb$")


def executed_dir(root: Path) -> Path:
    """Where executed copies of the notebooks live: ``$TDN_EXECUTED_DIR`` or ``<root>/build/executed``
    (the test run writes them there, :func:`build_site` reads them)."""
    return Path(os.environ.get("TDN_EXECUTED_DIR", Path(root) / "build" / "executed"))


def notebook_paths(notebooks_dir: Path) -> list[Path]:
    """The course notebooks (``NN_name.ipynb``) in order."""
    paths = sorted(p for p in Path(notebooks_dir).glob("*.ipynb") if NOTEBOOK_NAME.match(p.name))
    if not paths:
        raise ValueError(f"notebooks_dir={str(notebooks_dir)!r} holds no NN_name.ipynb notebooks")
    return paths


def execute_notebook(source: Path, target: Path, timeout: int = 600) -> None:
    """Run ``source`` top to bottom in a fresh kernel (cwd: its folder) and write the result to ``target``.

    Cells tagged ``# NBVAL_SKIP`` (the Colab install cell) are not run, as under nbval.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(source), as_version=4)
    skipped = {}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.source.lstrip().startswith("# NBVAL_SKIP"):
            skipped[index] = cell
    runnable = copy.deepcopy(nb)
    runnable.cells = [c for i, c in enumerate(nb.cells) if i not in skipped]
    client = NotebookClient(runnable, timeout=timeout, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(source.parent)}})
    client.execute()
    executed = iter(runnable.cells)
    nb.cells = [skipped[i] if i in skipped else next(executed) for i in range(len(nb.cells))]
    nb.metadata = runnable.metadata
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(target))


def executed_copy(source: Path, folder: Path, execute_missing: bool = True) -> Path:
    """The executed copy of ``source``: the test run's if it is newer than the notebook, else a new one."""
    target = Path(folder) / source.name
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    if not execute_missing:
        raise FileNotFoundError(f"no executed copy of {source.name} in {folder} newer than the notebook")
    print(f"executing {source.name} ...", file=sys.stderr)
    execute_notebook(source, target)
    return target


def plotly_outputs_to_html(nb: Any, script_src: str) -> int:
    """Give every plotly output a ``text/html`` rendering (the first one per page loads plotly.js from
    ``script_src``); the JSON stays for JupyterLab. Returns the number of figures converted."""
    import plotly.io as pio

    count = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if PLOTLY_MIME not in data or "text/html" in data:
                continue
            figure = pio.from_json(json.dumps(data[PLOTLY_MIME]), skip_invalid=True)
            data["text/html"] = pio.to_html(figure, full_html=False,
                                            include_plotlyjs=script_src if count == 0 else False)
            count += 1
    return count


def _title(nb: Any, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def _landing_page(titles: dict[str, str], glossary: str | None) -> str:
    lines = ["# tdnotebooks: token dropping for BERT-style models, by running it", "",
             "The executed notebooks of the course, as a learner sees them after *Run All* with the default "
             "(small, CPU) settings. Figures are interactive; sliders show their default position (moving them "
             "needs a live kernel: open the notebook in JupyterLab, Binder or Colab).", "", "## Notebooks", ""]
    lines += [f"1. [{title}]({page})" for page, title in titles.items()]
    if glossary:
        lines += ["", glossary]
    return "\n".join(lines) + "\n"


def mkdocs_config(pages: dict[str, str], site_dir: Path) -> dict[str, Any]:
    """The mkdocs configuration (material theme without web fonts, mkdocs-jupyter for the notebooks)."""
    return {
        "site_name": "tdnotebooks", "docs_dir": "docs", "site_dir": str(site_dir), "use_directory_urls": False,
        "theme": {"name": "material", "font": False}, "strict": True,
        "nav": [{"Start": "index.md"}, *({title: page} for page, title in pages.items())],
        "plugins": [{"mkdocs-jupyter": {"execute": False, "include_source": True, "ignore_h1_titles": True}}],
    }


def build_site(root: Path = Path("."), out: Path | None = None, executed: Path | None = None,
               execute_missing: bool = True, glossary: str | None = None) -> Path:
    """Build the site of ``root/notebooks`` into ``out`` (default ``root/build/site``); returns ``out``.

    executed: where executed copies are looked for / written (default :func:`executed_dir`).
    execute_missing=False raises FileNotFoundError instead of executing a notebook without a fresh copy.
    glossary: Markdown appended to the landing page (default: the README's glossary section, if any).
    """
    import nbformat
    import plotly
    import yaml

    root = Path(root).resolve()
    out = Path(out).resolve() if out else root / "build" / "site"
    executed = Path(executed) if executed else executed_dir(root)
    work = root / "build" / "site-src"
    shutil.rmtree(work, ignore_errors=True)
    (work / "docs" / "assets").mkdir(parents=True)
    shutil.copy(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", work / "docs" / PLOTLY_JS)

    titles = {}
    for source in notebook_paths(root / "notebooks"):
        nb = nbformat.read(str(executed_copy(source, executed, execute_missing)), as_version=4)
        plotly_outputs_to_html(nb, PLOTLY_JS)
        nbformat.write(nb, str(work / "docs" / source.name))
        titles[source.name] = _title(nb, source.stem)
    if glossary is None:
        glossary = readme_section(root / "README.md", "Glossary")
    (work / "docs" / "index.md").write_text(_landing_page(titles, glossary))
    (work / "mkdocs.yml").write_text(yaml.safe_dump(mkdocs_config(titles, out), sort_keys=False))
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "-f",
                             str(work / "mkdocs.yml")], capture_output=True, text=True,
                            cwd=work, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})   # its cache stays in build/
    if result.returncode != 0:
        raise RuntimeError(f"mkdocs build failed:\n{result.stdout}\n{result.stderr}")
    return out


def readme_section(readme: Path, heading: str) -> str | None:
    """The ``## heading`` section of a Markdown file (heading included), or None if absent."""
    if not Path(readme).exists():
        return None
    match = re.search(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", Path(readme).read_text(), re.M | re.S)
    return match.group(0).strip() if match else None


def main(argv: list[str] | None = None) -> int:
    from tdnotebooks.validation import arg_type, check_folder

    parser = argparse.ArgumentParser(prog="python -m tdnotebooks.site", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=arg_type(check_folder, must_exist=True), default=".",
                        help="the repository root (holds notebooks/ and README.md)")
    parser.add_argument("--out", type=arg_type(check_folder), help="site folder (default ROOT/build/site)")
    parser.add_argument("--no-execute", action="store_true",
                        help="use only the executed copies of the last test run; fail if one is missing")
    args = parser.parse_args(argv)
    if not (Path(args.root) / "notebooks").is_dir():
        parser.error(f"--root {args.root!r} has no notebooks/ folder (run from the repository root)")
    try:
        out = build_site(Path(args.root), Path(args.out) if args.out else None, execute_missing=not args.no_execute)
    except (FileNotFoundError, RuntimeError) as exc:
        parser.exit(1, f"error: {exc}\n")
    print(f"site written to {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
