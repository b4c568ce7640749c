"""The notebooks in notebooks/ execute top to bottom on synthetic data, so they never rot."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = [
    "quickstart",
    "training_inspection",
    "identity_stability",
]  # in order: the last reuses a checkpoint


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebooks")


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, workspace, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("HEADRECON_NB_OUT", str(workspace))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(workspace)}})  # fmt: skip
    client.execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
    ]
    assert not errors
    assert any(o.output_type == "display_data" for c in nb.cells for o in c.get("outputs", []))
    assert os.listdir(workspace)
