"""`examples/quickstart.ipynb` runs from top to bottom against the suite's live stack (its
real worker and background worker), in a Jupyter kernel of its own, so it never rots."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from services.core.config import REPO_ROOT

# The notebook is a client's walk through the API: the database under it is not its subject.
pytestmark = pytest.mark.one_database

NOTEBOOK = REPO_ROOT / "examples" / "quickstart.ipynb"


@pytest.mark.usefixtures("worker", "background_worker")
def test_the_quickstart_notebook_runs_top_to_bottom(
    live_server: str, api_key: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VLMQ_URL", live_server)
    monkeypatch.setenv("VLMQ_API_KEY", api_key)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells), "commit it without outputs"
    NotebookClient(
        notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    nbformat.write(notebook, tmp_path / "quickstart.executed.ipynb")
    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output["output_type"] == "error"]
    text = "".join(output.get("text", "") for output in outputs)
    assert "completed" in text and "signed: True" in text and "confidence" in text
    # The scores' plot and the attention picture.
    pictures = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(pictures) == 2
