"""The notebooks run top to bottom in a real kernel (no browser): nbclient, as CI would run them."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from helpers import free_port
from nbclient import NotebookClient

from pluv_widget.local import stop_local_server

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run(name: str) -> nbformat.NotebookNode:
    notebook: nbformat.NotebookNode = nbformat.read(NOTEBOOKS / name, as_version=4)  # type: ignore[no-untyped-call]
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return notebook


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels inherit this environment: a private local server home and port, this checkout."""
    for name in ("PLUV_WIDGET_URL", "PLUV_WIDGET_JOIN_CODE", "JUPYTERHUB_USER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PLUV_WIDGET_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PLUV_WIDGET_PORT", str(free_port()))
    monkeypatch.setenv("CLASSROOM_PORT", str(free_port()))
    root = str(NOTEBOOKS.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))


def outputs(notebook: nbformat.NotebookNode) -> str:
    return "\n".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


def test_quickstart_runs_and_starts_the_local_server() -> None:
    try:
        notebook = run("quickstart.ipynb")
    finally:
        stopped = stop_local_server()
    assert stopped  # the notebook's widget started it: nothing was configured
    text = outputs(notebook)
    assert "hello from Python" in text
    assert '"server": "pluv-widget"' in text  # pluv-widget status


def test_classroom_runs_top_to_bottom() -> None:
    notebook = run("classroom.ipynb")
    text = outputs(notebook)
    assert "{'quicksort': 0, 'mergesort': 2, 'heapsort': 0}" in text  # the teacher's live counts
    assert "'counts': None, 'my_choice': ['mergesort']" in text  # a student's view before the reveal
    assert "the server refused: invalid_input: the poll is closed" in text
    assert "the server refused: forbidden" in text
    assert "[('Ada', 'stuck on 3b'), ('Grace', 'what does stable mean?')]" in text
    assert "'ex1': '2/2'" in text
    assert "'attendance', 'checkpoint', 'hand'" in text  # the CSV export's kinds
