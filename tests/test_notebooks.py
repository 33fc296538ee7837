"""The committed notebooks are real runs whose quoted numbers match their logs; each one still executes."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import nbformat
import pytest

from conftest import ROOT

STEPS = {1: "Model_1", 2: "Model_2", 3: "Model_3"}
EPOCH_LINE = re.compile(r"epoch +(\d+)/(\d+) \| train loss [\d.]+ acc +([\d.]+)% \| test loss [\d.]+ acc +([\d.]+)% ")


def read(step: int) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / f"S7_Step{step}.ipynb", as_version=4)


def log(nb) -> list[tuple[int, int, float, float]]:
    """(epoch, epochs, train acc, test acc) for every per-epoch line the notebook printed."""
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream")
    return [(int(e), int(n), float(tr), float(te)) for e, n, tr, te in EPOCH_LINE.findall(text)]


def section(markdown: str, title: str) -> str:
    match = re.search(rf"## {title}\n(.*?)(?=\n## |\Z)", markdown, re.S)
    assert match, f"no '## {title}' section"
    return match.group(1)


def quoted(result: str, label: str) -> str:
    match = re.search(rf"{label}: *\**([^*\n]+)", result)
    assert match, f"Result does not quote '{label}'"
    return match.group(1).strip()


@pytest.mark.parametrize("step", STEPS)
def test_notebook_is_a_complete_real_run(step):
    nb = read(step)
    head = nb.cells[0].source
    for title in ("Target", "Result", "Analysis"):
        assert section(head, title).strip(), title
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "not executed top to bottom"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert "widgets" not in nb.metadata and "papermill" not in nb.metadata
    assert not [c for c in nb.cells if "execution" in c.metadata], "timestamps left in the cell metadata"
    epochs = log(nb)
    assert epochs and len(epochs) == epochs[-1][1] <= 15
    assert [e for e, *_ in epochs] == list(range(1, len(epochs) + 1))


@pytest.mark.parametrize("step", STEPS)
def test_result_block_quotes_its_own_log(step):
    nb = read(step)
    epochs = log(nb)
    test_acc = [te for *_, te in epochs]
    result = section(nb.cells[0].source, "Result")
    params = int(quoted(result, "Parameters").replace(",", ""))
    assert f"parameters: {params:,}" in "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                                                 for o in c.outputs)
    assert quoted(result, "Last 5 epochs \\(test %\\)").split(", ") == [f"{a:.2f}" for a in test_acc[-5:]]
    best = max(test_acc)
    assert quoted(result, "Best test accuracy").startswith(f"{best:.2f} % (epoch {test_acc.index(best) + 1})")
    first = next((i + 1 for i, a in enumerate(test_acc) if a >= 99.4), None)
    assert quoted(result, "First epoch ≥ 99.4 %") == str(first or "none")
    assert quoted(result, "Train accuracy, last epoch").startswith(f"{epochs[-1][2]:.2f} %")


@pytest.mark.parametrize("step", STEPS)
def test_saved_history_matches_the_notebook_log(step):
    record = json.loads((ROOT / "results" / f"step{step}_notebook.json").read_text())
    assert record["model"] == STEPS[step]
    assert [f"{a:.2f}" for a in record["history"]["test_acc"]] == [f"{te:.2f}" for *_, te in log(read(step))]


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.mark.parametrize("step", STEPS)
def test_notebook_executes_end_to_end_and_saves_no_widget_state(step, mnist_root, tmp_path):
    """Run as on Colab, where ipywidgets is importable: the saved notebook must carry no widget (GitHub would
    refuse to render it) and no progress bar text, only the epoch lines."""
    papermill = pytest.importorskip("papermill")
    pytest.importorskip("ipywidgets", reason="the widget check needs ipywidgets importable, as on Colab")
    out = tmp_path / f"S7_Step{step}.ipynb"
    before = (ROOT / f"S7_Step{step}.ipynb").read_bytes()
    papermill.execute_notebook(str(ROOT / f"S7_Step{step}.ipynb"), str(out), cwd=str(ROOT), kernel_name="python3",
                               parameters={"EPOCHS": 2, "SUBSET": 300, "DATA_DIR": str(mnist_root)},
                               progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    assert len(log(nb)) == 2
    assert "widgets" not in nb.metadata
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if WIDGET_VIEW in o.get("data", {})]
    texts = [o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs]
    assert not [t for t in texts if "\r" in t or re.search(r"\d+/\d+ \[", t)], "a progress bar was left behind"
    assert (ROOT / f"S7_Step{step}.ipynb").read_bytes() == before


def setup_cell(step: int, url: str) -> str:
    """The notebook's Colab setup cell with ``REPO_URL`` pointed at ``url``."""
    source = next(c.source for c in read(step).cells if c.cell_type == "code" and "REPO_URL = " in c.source)
    source, n = re.subn(r'^REPO_URL = ".*?"', f"REPO_URL = {url!r}", source, flags=re.M)
    assert n == 1, "the setup cell must set REPO_URL once, in one line"
    return source


def run_as_colab(code: str, cwd, times: int = 1):
    """Run ``code`` ``times`` in one Python process that looks like Colab (``google.colab`` imported)."""
    driver = ("import sys, types, os\nsys.modules['google.colab'] = types.ModuleType('google.colab')\n"
              f"code = {code!r}\n"
              f"for _ in range({times}):\n    exec(code, {{}})\n    print('cwd', os.getcwd())\n")
    return subprocess.run([sys.executable, "-c", driver], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("step", STEPS)
def test_colab_setup_clones_once_and_reruns_cleanly(step, tmp_path):
    """A second "Run all", and a restarted runtime (back in the start folder), reuse the first clone."""
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    code = setup_cell(step, ROOT.as_uri())
    done = run_as_colab(code, tmp_path, times=2)
    assert done.returncode == 0, done.stderr
    clone = tmp_path / ROOT.name
    assert done.stdout.split() == ["cwd", str(clone), "cwd", str(clone)]
    assert (clone / "model.py").exists() and not (clone / ROOT.name).exists()
    again = run_as_colab(code, tmp_path)  # restarted runtime: cwd is the start folder again
    assert again.returncode == 0 and again.stdout.split() == ["cwd", str(clone)], again.stderr


def test_colab_setup_names_the_url_when_the_clone_fails(tmp_path):
    url = (tmp_path / "elsewhere" / "S7").as_uri()
    work = tmp_path / "content"
    work.mkdir()
    done = run_as_colab(setup_cell(1, url), work)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"RuntimeError: Could not clone {url} (") and "set REPO_URL" in last
    assert "CalledProcessError" not in done.stderr and list(work.iterdir()) == []
