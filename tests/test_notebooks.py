"""The example notebooks run from top to bottom (nbclient, a real Jupyter kernel), and show
what a notebook user should see: models as tables, figures and the convolution animation inline,
progress from tqdm.auto.  A notebook that raises fails its test."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def execute(path, cwd, monkeypatch):
    """Run every cell in a fresh kernel whose numcnn is this checkout's; returns the notebook."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT / "src")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(str(path), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def outputs(nb, kind=None):
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if kind is None or kind in out.get("data", {}) or out.get("name") == kind:
                yield out


def test_the_three_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == ["01-the-deck.ipynb", "02-train-and-inspect-digits.ipynb",
                                           "03-your-own-images.ipynb"]
    for p in NOTEBOOKS:                     # shipped without outputs: run them yourself
        nb = nbformat.read(str(p), as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_01_the_deck_runs_and_plays_the_convolution_inline(tmp_path, monkeypatch):
    nb = execute(EXAMPLES / "01-the-deck.ipynb", tmp_path, monkeypatch)
    html = [o["data"]["text/html"] for o in outputs(nb, "text/html")]
    assert any('<img src="data:image/gif;base64,R0lGOD' in h for h in html)      # a GIF, no JS
    assert not any("<script" in h for h in html)
    assert any("<table>" in h and "Conv2D(1, 6, kernel_size=5, padding=2)" in h for h in html)
    assert len(list(outputs(nb, "image/png"))) >= 1                              # the gallery
    text = "".join(o.get("text", "") for o in outputs(nb, "stdout"))
    assert "o[0][0,0] = sum(window * w0) + b0 = " in text
    assert "output volume 3x3x2" in text
    summary = [o["data"]["text/plain"] for o in outputs(nb, "text/plain")
               if "total: 61,706 parameters" in o["data"]["text/plain"]]
    assert summary and not summary[0].startswith("'")              # the table, not a quoted str


def test_02_trains_and_shows_its_figures_inline(tmp_path, monkeypatch):
    nb = execute(EXAMPLES / "02-train-and-inspect-digits.ipynb", tmp_path, monkeypatch)
    assert len(list(outputs(nb, "image/png"))) == 4               # history, confusion, filters, maps
    stderr = "".join(o.get("text", "") for o in outputs(nb, "stderr"))
    assert "epoch 3/3" in stderr                                  # tqdm.auto's bars
    text = "".join(o.get("text", "") for o in outputs(nb, "stdout"))
    assert "test accuracy" in text and "'value_range': [0, 16]" in text
    assert "InputRangeWarning" in text
    assert (tmp_path / "digits.safetensors").is_file()


def test_03_trains_on_a_folder_it_makes(tmp_path, monkeypatch):
    nb = execute(EXAMPLES / "03-your-own-images.ipynb", tmp_path, monkeypatch)
    text = "".join(o.get("text", "") for o in outputs(nb, "stdout"))
    assert "PolarityWarning" in text and "square-inverted.png" in text
    assert (tmp_path / "runs" / "shapes" / "model.safetensors").is_file()
    assert len(list(tmp_path.joinpath("shapes", "cross").iterdir())) == 60
    assert len(list(outputs(nb, "image/png"))) >= 2


def test_a_broken_notebook_fails(tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import numcnn"),
                                         nbformat.v4.new_code_cell("numcnn.datasets.load('cifar')")])
    path = tmp_path / "broken.ipynb"
    nbformat.write(nb, str(path))
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="did you mean cifar10"):
        execute(path, tmp_path, monkeypatch)
