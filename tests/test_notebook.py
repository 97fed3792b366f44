"""The tutorial notebook runs top to bottom (small settings), so it cannot rot."""

import importlib.util
import json

import pytest

from conftest import ROOT, write_fake_idx

NOTEBOOK = ROOT / "notebooks" / "course.ipynb"


@pytest.mark.slow
def test_notebook_executes(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    data = write_fake_idx(tmp_path / "d", n_train=400, n_test=80)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = next(c for c in nb.cells if c.cell_type == "code" and "# Parameters" in c.source)
    params.source = f"DATA_DIR = {json.dumps(str(data))}\nTRAIN_SIZE = 300\nEPOCHS = 1\nSEED = 0"
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 8  # every figure of the course is drawn
    text = "".join(o.get("text", "") for o in outputs)
    assert "test accuracy" in text and "chosen k" in text and "consistency" in text
    if importlib.util.find_spec("ray") is not None:  # the sweep section ran on Ray
        assert (
            "sweep: chosen k" in text
            and text.count("validation 0.") + text.count("validation 1.") == 7
        )


def test_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
