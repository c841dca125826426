"""The course site (python -m tdnotebooks.site): plotly outputs made self-contained, the landing page and
navigation, and a real mkdocs build of every notebook (the built site is checked in a browser in
tests/test_browser.py)."""

import json
from pathlib import Path

import nbformat
import plotly.graph_objects as go
import pytest

from tdnotebooks.site import (
    PLOTLY_JS,
    PLOTLY_MIME,
    main,
    mkdocs_config,
    notebook_paths,
    plotly_outputs_to_html,
    readme_section,
)

ROOT = Path(__file__).resolve().parents[1]


def _figure_output(fig):
    return nbformat.v4.new_output("display_data", data={PLOTLY_MIME: json.loads(fig.to_json())})


def test_plotly_outputs_get_html_and_only_the_first_loads_plotly_js():
    nb = nbformat.v4.new_notebook()
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    nb.cells = [nbformat.v4.new_code_cell("1", outputs=[_figure_output(fig)]),
                nbformat.v4.new_code_cell("2", outputs=[_figure_output(fig), nbformat.v4.new_output(
                    "stream", name="stdout", text="summary\n")])]
    assert plotly_outputs_to_html(nb, PLOTLY_JS) == 2
    first, second = (c.outputs[0]["data"]["text/html"] for c in nb.cells)
    assert f'src="{PLOTLY_JS}"' in first and PLOTLY_JS not in second
    assert "Plotly.newPlot" in first and "Plotly.newPlot" in second
    assert PLOTLY_MIME in nb.cells[0].outputs[0]["data"]          # JupyterLab keeps its renderer
    assert plotly_outputs_to_html(nb, PLOTLY_JS) == 0                  # idempotent


def test_readme_section_and_notebook_list(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# t\n\n## Glossary\n\n**HWCap**: the largest batch.\n\n## Next\n\nx\n")
    assert readme_section(readme, "Glossary") == "## Glossary\n\n**HWCap**: the largest batch."
    assert readme_section(readme, "Missing") is None
    names = [p.name for p in notebook_paths(ROOT / "notebooks")]
    assert names == sorted(names) and names[0] == "00_start_here.ipynb"
    with pytest.raises(ValueError, match="notebooks_dir="):
        notebook_paths(tmp_path)


def test_mkdocs_config_lists_every_page_in_order():
    config = mkdocs_config({"00_a.ipynb": "A", "01_b.ipynb": "B"}, Path("/tmp/site"))
    assert config["nav"] == [{"Start": "index.md"}, {"A": "00_a.ipynb"}, {"B": "01_b.ipynb"}]
    assert config["strict"] is True and config["theme"] == {"name": "material", "font": False}


def test_cli_needs_a_notebooks_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--root", str(tmp_path)])
    assert exc.value.code == 2 and "has no notebooks/ folder" in capsys.readouterr().err


def test_site_builds_a_page_per_notebook(built_site):
    index = (built_site / "index.html").read_text()
    assert (built_site / PLOTLY_JS).stat().st_size > 1_000_000                  # plotly.js served locally
    for source in notebook_paths(ROOT / "notebooks"):
        page = built_site / source.with_suffix(".html").name
        assert page.exists(), f"no page for {source.name}"
        nb = nbformat.read(str(source), as_version=4)
        title = next(line[2:] for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                     if line.startswith("# "))
        assert title.split(":")[0] in index                                        # listed on the landing page
        assert "Traceback (most recent call last)" not in page.read_text()        # no error output rendered


CARTESIAN = {"bar", "scatter", "scattergl", "histogram", "box", "violin", "heatmap"}


def _untitled_axes(figure: dict) -> list[str]:
    """Axes of cartesian traces that lack a title (every figure needs axis titles with units)."""
    layout, missing = figure.get("layout", {}), []
    for trace in figure.get("data", []):
        if trace.get("type", "scatter") not in CARTESIAN:
            continue
        for letter in ("x", "y"):
            ref = trace.get(f"{letter}axis", letter)
            axis = layout.get(f"{letter}axis{ref[1:]}", {})
            title = axis.get("title", {})
            text = title.get("text") if isinstance(title, dict) else title
            if not text and axis.get("showticklabels") is not False and f"{letter}axis{ref[1:]}" not in missing:
                missing.append(f"{letter}axis{ref[1:]}")
    return missing


def test_every_figure_of_the_executed_notebooks_has_axis_titles(built_site):
    problems = []
    for page in sorted(built_site.glob("*.ipynb")):
        nb = nbformat.read(str(page), as_version=4)
        for index, cell in enumerate(nb.cells):
            for output in cell.get("outputs", []):
                figure = output.get("data", {}).get(PLOTLY_MIME)
                if figure and _untitled_axes(figure):
                    problems.append(f"{page.name} cell {index}: {', '.join(_untitled_axes(figure))} without title")
    assert not problems, "\n".join(problems)
