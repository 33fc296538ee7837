"""The README's numbers are the committed runs' numbers."""
from __future__ import annotations

import json
import re

import pytest

import model
import utils
from conftest import ROOT

README = (ROOT / "README.md").read_text()


def table_rows(heading: str) -> list[list[str]]:
    """Cells of the first Markdown table after ``## heading`` (header and rule left out)."""
    body = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip().strip("|").split("|") for line in body.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows[2:]]


@pytest.mark.parametrize("step", [1, 2, 3])
def test_models_table_matches_each_notebook_run(step):
    record = json.loads((ROOT / "results" / f"step{step}_notebook.json").read_text())
    row = next(r for r in table_rows("All models") if r[0].startswith(f"[Model_{step}]"))
    h, s = record["history"], record["summary"]
    params = utils.count_parameters(getattr(model, f"Model_{step}")())
    assert row[1] == f"{params:,}" == f"{record['parameters']:,}"
    assert row[2] == f"{s['best']:.2f} ({h['test_acc'].index(s['best']) + 1})"
    assert row[3] == f"{s['last']:.2f}" and row[4] == f"{s['min_last5']:.2f}"
    assert row[5] == str(s["first_at_target"] or "–")
    assert row[6] == f"{h['train_acc'][-1] - h['test_acc'][-1]:.2f}"


@pytest.mark.parametrize("step", [1, 2, 3])
def test_step_story_quotes_the_notebook_run(step):
    record = json.loads((ROOT / "results" / f"step{step}_notebook.json").read_text())
    story = " ".join(README.split(f"### Step {step}", 1)[1].split("###", 1)[0].split())  # lines rewrapped
    last5 = ", ".join(f"{a:.2f}" for a in record["history"]["test_acc"][-5:])
    assert f"last five epochs {last5}" in story
    assert f"{record['parameters']:,} parameters" in story


def model_3_seeds() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((ROOT / "results" / "Model_3").glob("*.json"))]


def test_five_seed_table_matches_the_results_files():
    records = {r["seed"]: r for r in model_3_seeds()}
    assert len(records) == 5
    rows = [r for r in table_rows("Five seeds") if r[0].isdigit()]
    assert sorted(int(r[0]) for r in rows) == sorted(records)
    for row in rows:
        rec = records[int(row[0])]
        acc = rec["history"]["test_acc"]
        assert rec["config"]["epochs"] == len(acc) <= 15 and rec["parameters"] < 8000
        assert row[1] == " ".join(f"{a:.2f}" for a in acc[-5:])
        assert row[2] == f"{min(acc[-5:]):.2f}" and row[3] == f"{sum(acc[-5:]) / 5:.2f}"
        assert row[4] == str(rec["summary"]["first_at_target"] or "–")


def test_readme_states_how_many_seeds_meet_the_target():
    passing = sum(min(r["history"]["test_acc"][-5:]) >= 99.4 for r in model_3_seeds())
    assert f"on **{passing} of 5 seeds**" in README


def test_every_seed_holds_the_target_in_its_last_five_epochs():
    for record in model_3_seeds():
        assert min(record["history"]["test_acc"][-5:]) >= 99.4, f"seed {record['seed']}"


def test_pipeline_comparison_matches_the_results_files():
    rows = [r for r in table_rows("Both pipelines, same accuracy") if r[0].isdigit()]
    assert sorted(int(r[0]) for r in rows) == [1, 2, 3, 4, 5]
    for row in rows:
        for pipeline, cells in (("Model_3", row[1:3]), ("Model_3_conventional", row[3:5])):
            path = ROOT / "results" / "fourth_design" / pipeline / f"Model_3_seed{row[0]}.json"
            record = json.loads(path.read_text())
            assert record["config"]["pipeline"] == ("device" if pipeline == "Model_3" else "conventional")
            last5 = record["history"]["test_acc"][-5:]
            assert cells == [" ".join(f"{a:.2f}" for a in last5), f"{sum(last5) / 5:.2f}"]
