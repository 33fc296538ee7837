"""The README's numbers are the committed runs' numbers."""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import re
import statistics
import subprocess
import sys

import pytest
import torch

import model
import utils
from conftest import ROOT, load_script, synthetic_digits, write_idx

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


def records_in(folder: str) -> dict[int, dict]:
    """The run JSON files directly in ``results/<folder>`` (those with a seed and a history), by seed."""
    records = (json.loads(p.read_text()) for p in (ROOT / "results" / folder).glob("*.json"))
    return {r["seed"]: r for r in records if "seed" in r and "history" in r}


V17 = "design_v17/Model_3"  # design v17's fresh runs: Model_3 until design v33


def runs(step: int) -> dict[int, dict]:
    """The committed test-seed runs of ``Model_<step>``, by seed."""
    return records_in(f"Model_{step}")


def section_text(heading: str) -> str:
    return README.split(heading, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]


def seed_rows(text: str) -> list[list[str]]:
    rows = [line.strip().strip("|").split("|") for line in text.splitlines() if line.strip().startswith("|")]
    return [[cell.strip() for cell in row] for row in rows if row[0].strip().isdigit()]


def bold_deltas(printed: list[str], n: int) -> str:
    """The bold cell a validation round's README gives a candidate, ``**lowest (SE) / mean (SE)**``, from run.py's
    two printed lines (``--compare`` or ``--pooled``: lowest epoch, then mean), each over ``n`` paired seeds."""
    found = [re.search(rf"paired delta ([+-]\d\.\d\d) \(SE (\d\.\d\d), n = {n}\)", line) for line in printed]
    return f"**{found[0][1]} (SE {found[0][2]}) / {found[1][1]} (SE {found[1][2]})**"


def check_rows(rows: list[list[str]], records: dict[int, dict]) -> None:
    """| seed | test %, epochs 11-15 | min | mean | rows against the JSON files, every run listed."""
    assert sorted(int(r[0]) for r in rows) == sorted(records)
    for row in rows:
        rec = records[int(row[0])]
        acc = rec["history"]["test_acc"]
        assert rec["config"]["epochs"] == len(acc) == 15 and rec["parameters"] < 8000
        assert rec["evaluated_on"] == "test set" and rec["config"]["subset"] is None
        assert row[1] == " ".join(f"{a:.2f}" for a in acc[-5:])
        assert row[2] == f"{min(acc[-5:]):.2f}" and row[3] == f"{sum(acc[-5:]) / 5:.2f}"


def check_timed_rows(rows: list[list[str]], records: dict[int, dict]) -> None:
    """| seed | test %, epochs 11-15 | min | mean | pass | seconds | rows against the JSON files, every run listed."""
    check_rows(rows, records)
    for row in rows:
        record = records[int(row[0])]
        assert row[4] == ("yes" if min(record["history"]["test_acc"][-5:]) >= utils.TARGET_ACC else "**no**")
        assert row[5] == f"{record['wall_seconds']:.0f}"

def last5_mean(record: dict) -> float:
    return sum(record["history"]["test_acc"][-5:]) / 5


def passing(records: dict[int, dict]) -> int:
    """How many runs hold the target in every one of their last five epochs."""
    return sum(min(r["history"]["test_acc"][-5:]) >= utils.TARGET_ACC for r in records.values())


def mean_std(records: dict[int, dict]) -> str:
    means = [last5_mean(r) for r in records.values()]
    return f"{statistics.mean(means):.2f} ± {statistics.stdev(means):.2f} %"


@pytest.mark.parametrize("step", [1, 2])
def test_each_steps_seed_table_matches_its_runs(step):
    records = runs(step)
    assert sorted(records) == [1, 2, 3]
    text = section_text(f"### Step {step}")
    check_rows(seed_rows(text), records)
    assert f"{mean_std(records)} (n = 3)" in " ".join(text.split())


def planned_fresh_seeds(plan: str) -> list[int]:
    """The fresh test seeds a committed plan names, in bold: ``**fresh test seeds 2001, ..., 2010**``."""
    text = " ".join((ROOT / plan).read_text().split())
    found = re.search(r"\*\*(?:fresh test seeds )?((?:\d+, )+\d+)\.?\*\*", text)
    return [int(v) for v in found.group(1).split(", ")]


def test_every_planned_fresh_seed_is_run_and_reported():
    """Model_3's fresh seeds, named in design v33's plan: every run in the README's table, with its pass and time."""
    records = runs(3)
    assert sorted(records) == planned_fresh_seeds("results/validation/v33/PLAN.md") and len(records) == 10
    rows = seed_rows(section_text("## Fresh seeds"))
    check_timed_rows(rows, records)


@pytest.mark.parametrize("design, batch_size", [("design_v2", 128), ("design_v3", 64), ("design_v4", 64),
                                                ("design_v5", 64), ("design_v7", 64),
                                                ("design_v12", 64), ("design_v17", 64)])
def test_superseded_designs_kept_every_one_of_their_fresh_seeds(design, batch_size):
    records = records_in(f"{design}/Model_3")
    assert sorted(records) == planned_fresh_seeds(f"results/{design}/PLAN.md")
    assert {r["config"]["batch_size"] for r in records.values()} == {batch_size} and len(records) == 10


def test_each_design_named_seeds_no_earlier_design_had():
    plans = ["results/design_v2/PLAN.md", "results/design_v3/PLAN.md", "results/design_v4/PLAN.md",
             "results/design_v5/PLAN.md", "results/validation/v6/PLAN.md", "results/design_v7/PLAN.md",
             "results/validation/v8/PLAN.md", "results/validation/v9/PLAN.md", "results/validation/v10/PLAN.md",
             "results/validation/v11/PLAN.md", "results/design_v12/PLAN.md", "results/validation/v13/PLAN.md",
             "results/validation/v14/PLAN.md", "results/validation/v15/PLAN.md", "results/validation/v16/PLAN.md",
             "results/design_v17/PLAN.md", "results/validation/v18/PLAN.md", "results/validation/v19/PLAN.md",
             "results/validation/v20/PLAN.md", "results/validation/v21/PLAN.md",
             "results/validation/v22/PLAN.md", "results/validation/v23/PLAN.md", "results/validation/v24/PLAN.md",
             "results/validation/v25/PLAN.md", "results/validation/v26/PLAN.md", "results/validation/v27/PLAN.md",
             "results/validation/v28/PLAN.md", "results/validation/v29/PLAN.md", "results/validation/v30/PLAN.md",
             "results/validation/v31/PLAN.md", "results/validation/v32/PLAN.md", "results/validation/v33/PLAN.md"]
    seeds = [set(planned_fresh_seeds(plan)) for plan in plans]
    seeds.append(set(range(4011, 4021)))  # design v6's plan names them for design v5's model (v6 adopted nothing)
    seeds.append(set(range(9941, 9951)))  # ten more for design v17's model (design_v17/Model_3/more_seeds/README.md)
    seeds.append(set(range(9841, 9851)))  # ten more for design v33's model (results/Model_3/more_seeds/README.md)
    seeds.append(set(range(9711, 9721)))  # design v33 in float32 (results/Model_3/float32_9711-9720/README.md)
    seeds.append(set(range(9601, 9641)))  # the GPU check's seeds for design v12's model (results/gpu/README.md)
    assert all(len(s) == 10 for s in seeds[:-1]) and len(set.union(*seeds)) == 400


# seeds a plan named for the model of the design before it, should the plan adopt nothing (it adopted nothing), or
# that a file named for the model of its day (design v17's after design v18 adopted nothing, design v33's after
# Model_3 took its layers): (the file that named them, the fresh model's folder (its more_seeds/ holds them), their
# seeds, how their config differs)
MORE_SEEDS = [("results/validation/v6/PLAN.md", "design_v5/Model_3", list(range(4011, 4021)), {"ema": 0.0}),
              ("results/validation/v8/PLAN.md", "design_v7/Model_3", list(range(7001, 7011)), {}),
              ("results/design_v17/Model_3/more_seeds/README.md", "design_v17/Model_3", list(range(9941, 9951)), {}),
              ("results/Model_3/more_seeds/README.md", "Model_3", list(range(9841, 9851)), {})]


@pytest.mark.parametrize("plan, folder, seeds, differs", MORE_SEEDS)
def test_ten_more_seeds_are_run_and_reported(plan, folder, seeds, differs):
    """Every run is listed in its folder's README, and the counts over all twenty seeds are the JSON files'."""
    named = " ".join((ROOT / plan).read_text().split())
    assert f"**test seeds {seeds[0]}–{seeds[-1]}**" in named or planned_fresh_seeds(plan) == seeds
    more, fresh = records_in(f"{folder}/more_seeds"), records_in(folder)
    assert sorted(more) == seeds and len(fresh) == 10
    first = fresh[min(fresh)]["config"]
    for record in more.values():  # a field the fresh runs predate counts as its default
        assert {**CONFIG_DEFAULTS, **record["config"]} == {**CONFIG_DEFAULTS, **first, "seed": record["seed"],
                                                           **differs}
        assert record["parameters"] == fresh[min(fresh)]["parameters"]
        assert record["training_precision"] == "bfloat16 autocast"
    text = (ROOT / "results" / folder / "more_seeds/README.md").read_text()
    check_rows(seed_rows(text), more)
    text = " ".join(text.split())
    both = {**fresh, **more}
    assert f"**{passing(more)} of 10** hold" in text and f"mean {mean_std(more)}" in text
    assert f"**{passing(both)} of 20** seeds" in text and f"{mean_std(both)} (n = 20;" in text
    readme = " ".join(section_text("## Fresh seeds").split())
    assert f"{passing(both)} of 20 seeds, {mean_std(both)}" in readme


def float32_check_is_reported(fresh: dict[int, dict], f32: dict[int, dict], folder: str) -> str:
    """A float32 check's folder README (its table against both runs of each seed, the pass count, the level and the
    paired delta) and the README's Fresh seeds say what the JSON files say; returns that section, flattened."""
    text = (ROOT / "results" / folder / "README.md").read_text()
    rows = seed_rows(text)
    check_rows(rows, f32)
    for row in rows:
        assert row[5] == f"{last5_mean(fresh[int(row[0])]):.2f}"
    flat = " ".join(text.split())
    delta = paired_delta(f32, fresh).replace("-", "−")
    assert f"**{passing(f32)} of 10** seeds hold" in flat and f"mean {mean_std(f32)}" in flat
    assert f"float32 − bf16, seed by seed: {delta})" in flat
    readme = " ".join(section_text("## Fresh seeds").split())
    assert f"{passing(f32)} of 10 seeds passing at {mean_std(f32)}" in readme
    assert f"float32 minus bf16, seed by seed: {delta}) on the last-five" in readme
    return readme


def test_float32_check_is_design_v7s_recipe_in_float32_on_its_fresh_seeds_and_reported():
    """results/design_v7/Model_3/float32/: design v7's fresh seeds again, trained in float32 as a GPU trains the
    recipe."""
    fresh, f32 = records_in("design_v7/Model_3"), records_in("design_v7/Model_3/float32")
    assert sorted(f32) == sorted(fresh) and len(f32) == 10
    for seed, record in f32.items():
        assert record["config"] == {**fresh[seed]["config"], "bf16": False, "nesterov": False}
        assert record["training_precision"] == "float32" and fresh[seed]["training_precision"] == "bfloat16 autocast"
    readme = float32_check_is_reported(fresh, f32, "design_v7/Model_3/float32")
    notebook = json.loads((ROOT / "results" / "design_v7" / "step3_notebook.json").read_text())
    with_ema = [*fresh.values(), *records_in("design_v7/Model_3/more_seeds").values(), *f32.values(), notebook]
    count = f"{passing(dict(enumerate(with_ema)))} of {len(with_ema)}"  # seeds repeat: keyed by position
    assert f"its notebook run) {count} hold the target" in readme


def test_float32_check_is_design_v12s_recipe_in_float32_on_its_fresh_seeds_and_reported():
    """results/design_v12/Model_3/float32/: design v12's fresh seeds again, trained in float32 as a GPU trains the
    recipe; fields either run's JSON predates (``holdout_block``, ``label_smoothing``, ``elastic``) count as their
    defaults."""
    fresh, f32 = records_in("design_v12/Model_3"), records_in("design_v12/Model_3/float32")
    assert sorted(f32) == sorted(fresh) and len(f32) == 10
    for seed, record in f32.items():
        assert {**CONFIG_DEFAULTS, **record["config"]} == {**CONFIG_DEFAULTS, **fresh[seed]["config"], "bf16": False,
                                                           "subset": None}
        assert record["training_precision"] == "float32" and fresh[seed]["training_precision"] == "bfloat16 autocast"
    float32_check_is_reported(fresh, f32, "design_v12/Model_3/float32")


def test_float32_check_is_design_v17s_recipe_in_float32_on_its_fresh_seeds_and_reported():
    """results/design_v17/Model_3/float32/: design v17's fresh seeds again, trained in float32 as a GPU trains the
    recipe; the story and the count of this model's test runs (fresh seeds, the ten more, float32 check, notebook
    run) say what they give."""
    fresh, f32 = records_in(V17), records_in(f"{V17}/float32")
    assert sorted(f32) == sorted(fresh) and len(f32) == 10
    for seed, record in f32.items():
        assert {**CONFIG_DEFAULTS, **record["config"]} == {**CONFIG_DEFAULTS, **fresh[seed]["config"], "bf16": False}
        assert record["training_precision"] == "float32" and fresh[seed]["training_precision"] == "bfloat16 autocast"
    readme = float32_check_is_reported(fresh, f32, f"{V17}/float32")
    notebook = json.loads((ROOT / "results" / "design_v17" / "step3_notebook.json").read_text())
    counted = [*fresh.values(), *records_in(f"{V17}/more_seeds").values(), *f32.values(), notebook]
    count = f"{passing(dict(enumerate(counted)))} of {len(counted)}"
    assert (f"(design v17's fresh seeds, its ten more, its float32 check and its notebook run) {count} hold the "
            "target") in readme
    story = " ".join(section_text("## How it got here, in short").split())
    assert f"design v17 held the bar on **{passing(f32)} of 10** at {mean_std(f32)}" in story
    assert f"float32 minus bf16, seed by seed, {paired_delta(f32, fresh)})" in story


def test_float32_check_is_design_v33s_recipe_in_float32_on_its_fresh_seeds_and_reported():
    """results/Model_3/float32/: design v33's fresh seeds again, trained in float32 as a GPU (Colab) trains the
    recipe; its README and the README's Fresh seeds say what the runs give (Running it quotes them pooled with the
    ten more seeds' float32 runs: the test below)."""
    fresh, f32 = runs(3), records_in("Model_3/float32")
    assert sorted(f32) == sorted(fresh) and len(f32) == 10
    for seed, record in f32.items():
        assert record["config"] == {**fresh[seed]["config"], "bf16": False}
        assert record["training_precision"] == "float32" and fresh[seed]["training_precision"] == "bfloat16 autocast"
        assert record["parameters"] == 7878
    readme = float32_check_is_reported(fresh, f32, "Model_3/float32")
    folder = " ".join((ROOT / "results" / "Model_3" / "float32" / "README.md").read_text().split())
    cells = []
    for stat in (statistics.mean, min):
        deltas = [stat(f32[s]["history"]["test_acc"][-5:]) - stat(fresh[s]["history"]["test_acc"][-5:]) for s in f32]
        cells.append((statistics.mean(deltas), statistics.stdev(deltas) / len(deltas) ** 0.5))
    (mean, se_mean), (low, se_low) = cells
    three = f"({mean:+.3f}, SE {se_mean:.3f}, to three decimals)".replace("-", "−")
    lowest = f"{low:+.3f} (SE {se_low:.3f}) on the lowest epoch".replace("-", "−")
    assert three in folder and three in readme and lowest in folder and lowest in readme


def test_float32_check_of_design_v33s_ten_more_seeds_is_reported_alone_and_pooled():
    """results/Model_3/more_seeds/float32/: design v33's ten more seeds again, trained in float32; its README lists
    every run against its bf16 run, and it, the README's headline, Fresh seeds and Running it, step 3's notebook and
    Model_3's docstring quote the pooled check (n = 20) as the JSON files give it."""
    more, f32 = records_in("Model_3/more_seeds"), records_in("Model_3/more_seeds/float32")
    assert sorted(f32) == sorted(more) == list(range(9841, 9851))
    for seed, record in f32.items():
        assert record["config"] == {**more[seed]["config"], "bf16": False}
        assert record["training_precision"] == "float32" and more[seed]["training_precision"] == "bfloat16 autocast"
        assert record["parameters"] == 7878
    text = (ROOT / "results" / "Model_3" / "more_seeds" / "float32" / "README.md").read_text()
    rows = seed_rows(text)
    check_rows(rows, f32)
    for row in rows:
        assert row[5] == f"{last5_mean(more[int(row[0])]):.2f}"

    (m10, s10), (l10, sl10) = (paired_delta3(f32, more, stat) for stat in (statistics.mean, min))
    f32_all, bf16_all = {**records_in("Model_3/float32"), **f32}, {**runs(3), **more}
    (m20, s20), (l20, sl20) = (paired_delta3(f32_all, bf16_all, stat) for stat in (statistics.mean, min))
    ten, twenty = f"{passing(f32)} of 10", f"{passing(f32_all)} of 20"
    folder = " ".join(text.split())
    assert f"**{ten}** seeds hold" in folder and f"mean {mean_std(f32)}" in folder
    assert (f"float32 − bf16, seed by seed: {m10} (SE {s10}, n = 10) on the mean, {l10} (SE {sl10}) on the "
            "lowest") in folder
    assert f"float32 held the bar on {twenty} seeds at {mean_std(f32_all)}" in folder
    assert f"float32 − bf16 {m20} (SE {s20}) on the mean and {l20} (SE {sl20}) on the lowest epoch" in folder
    fresh_seeds = " ".join(section_text("## Fresh seeds").split())
    assert f"**{ten} seeds passing at {mean_std(f32)}**" in fresh_seeds
    assert (f"float32 minus bf16 there, seed by seed: {m10} (SE {s10}, n = 10) on the mean and {l10} (SE {sl10}) on "
            "the lowest epoch") in fresh_seeds
    assert f"float32 held the bar on {twenty} seeds at {mean_std(f32_all)} (n = 20)" in fresh_seeds
    assert (f"float32 minus bf16 {m20} (SE {s20}, n = 20) on the mean** and {l20} (SE {sl20}) on the "
            "lowest") in fresh_seeds
    head = " ".join(README.split("## Contents", 1)[0].split())
    assert f"held it on {twenty} at {mean_std(f32_all)}" in head and f"{m20} (SE {s20}, n = 20)" in head
    running = " ".join(section_text("## Running it").split())
    assert f"held it on {twenty} at {mean_std(f32_all)}" in running and f"{m20}, SE {s20}, n = 20" in running
    docstring = " ".join(model.Model_3.__doc__.split())
    assert f"{twenty}, {mean_std(f32_all).replace('±', '+-')}" in docstring
    assert f"{m20.replace('−', '-')}, SE {s20}, n = 20" in docstring
    notebook = step3_markdown()
    assert f"**{twenty}** at {mean_std(f32_all)}" in notebook and f"{m20} (SE {s20}, n = 20)" in notebook


@pytest.mark.parametrize("folder, seeds", [(V17, list(range(9801, 9811))), ("Model_3", [9831])])
def test_reruns_of_fresh_seeds_reproduce_them_exactly(folder, seeds):
    """results/design_v17/Model_3/rerun/: design v17's ten fresh seeds again on later code (9801-9802, then
    9803-9810); results/Model_3/rerun/: design v33's seed 9831 again through train.py once Model_3 had its layers.
    Every epoch's numbers are the fresh runs'; the README there quotes their seconds."""
    rerun, fresh = records_in(f"{folder}/rerun"), records_in(folder)
    assert sorted(rerun) == seeds
    text = (ROOT / "results" / folder / "rerun" / "README.md").read_text()
    for seed, record in rerun.items():
        assert record["history"] == {**fresh[seed]["history"], "seconds": record["history"]["seconds"]}
        assert {**CONFIG_DEFAULTS, **record["config"]} == {**CONFIG_DEFAULTS, **fresh[seed]["config"]}
        assert (f"| {seed} | {' '.join(f'{a:.2f}' for a in record['history']['test_acc'][-5:])} | yes" in text
                and f"| {record['wall_seconds']:.0f} | {fresh[seed]['wall_seconds']:.0f} |" in text)


def test_speed_table_quotes_design_v17s_run_times():
    """Speed's wall-time rows for design v17: its fresh runs, its float32 check and step 3's notebook run, in
    minutes (and seconds) from their JSON files."""
    text = section_text("## Speed")
    def minutes(records) -> str:
        seconds = [r["wall_seconds"] for r in records]
        return f"{min(seconds) / 60:.1f}–{max(seconds) / 60:.1f} min"
    fresh, f32 = records_in(V17).values(), records_in(f"{V17}/float32").values()
    notebook = json.loads((ROOT / "results" / "design_v17" / "step3_notebook.json").read_text())["wall_seconds"]
    seconds = [r["wall_seconds"] for r in fresh]
    assert f"fresh seeds 9801–9810 | {minutes(fresh)} ({min(seconds):.0f}–{max(seconds):.0f} s) |" in text
    assert f"float32 on its seeds 9801–9810 (run after design v18's validation, a check) | {minutes(f32)} |" in text
    assert f"| {notebook / 60:.1f} min ({notebook:.0f} s) |" in text
    assert f"its notebook run took {notebook:.0f} s alone on the CPU" in " ".join(text.split())


def test_step3_notebook_quotes_the_time_of_the_run_it_shows():
    """Step 3's notebook says in its Result how long its own run took: results/step3_notebook.json, which that run
    wrote (``SAVE``), so a re-execution that leaves the old time in the text fails here."""
    seconds = json.loads((ROOT / "results" / "step3_notebook.json").read_text())["wall_seconds"]
    cells = json.loads((ROOT / "S7_Step3.ipynb").read_text())["cells"]
    text = " ".join(" ".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown").split())
    assert f"It took {seconds:.0f} s, alone on the CPU, in this execution" in text


def test_the_headline_states_the_fresh_seed_outcome():
    records = runs(3)
    seconds = [r["wall_seconds"] for r in records.values()]
    head = " ".join(README.split("## Contents", 1)[0].split())
    assert (f"**{passing(records)} of 10 seeds** hold ≥ 99.4 % in every one of epochs 11–15; mean of those epochs "
            f"**{mean_std(records)}**") in head
    mean = statistics.mean(map(last5_mean, records.values()))
    assert f"missed by {99.52 - mean:.2f} point ({mean:.3f} %)" in head
    assert (f"({min(seconds):.0f}–{max(seconds):.0f} s per run, {sum(t <= 240 for t in seconds)} of 10 within 4 "
            "min)") in head
    more = records_in("Model_3/more_seeds")
    assert f"held the bar on {passing(more)} of 10" in head
    both = {**records, **more}
    assert f"over all twenty, **{passing(both)} of 20 seeds at {mean_std(both)}**" in head


def test_pipeline_comparison_quotes_the_fourth_designs_runs():
    text = " ".join(section_text("## The two input pipelines").split())
    for folder, words in (("Model_3", "device-resident"), ("Model_3_conventional", "conventional")):
        records = records_in(f"fourth_design/{folder}")
        assert len(records) == 5 and f"{mean_std(records)} {words}" in text


def test_pipeline_check_quotes_design_v3s_conventional_runs():
    conventional = records_in("design_v3/Model_3/conventional")
    assert {r["config"]["pipeline"] for r in conventional.values()} == {"conventional"}
    device = records_in("design_v3/Model_3")
    rows = seed_rows(section_text("## The two input pipelines"))
    assert sorted(int(r[0]) for r in rows) == sorted(conventional) == [2001, 2002, 2003, 2004]
    for row in rows:
        seed = int(row[0])
        acc = conventional[seed]["history"]["test_acc"][-5:]
        assert row[1:4] == [" ".join(f"{a:.2f}" for a in acc), f"{min(acc):.2f}", f"{sum(acc) / 5:.2f}"]
        assert row[4] == f"{last5_mean(device[seed]):.2f}"
    text = " ".join(section_text("## The two input pipelines").split())
    assert f"Conventional {mean_std(conventional)}" in text


def test_the_in_your_own_code_snippet_runs(mnist_root, tmp_path, monkeypatch, capsys):
    """The README's snippet, as printed, with REPO and DATA pointed here (synthetic MNIST files)."""
    snippet = README.split("### In your own code", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    snippet, n = re.subn(r'^REPO, DATA = .*$', f"REPO, DATA = {str(ROOT)!r}, {str(mnist_root)!r}", snippet,
                         flags=re.M)
    assert n == 1
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("matplotlib.pyplot.show", lambda *a, **k: None)
    scope: dict = {}
    exec(compile(snippet, "README snippet", "exec"), scope)
    assert len(scope["history"].test_acc) == 1
    out = capsys.readouterr().out
    loss_line = next(line for line in out.splitlines() if line.endswith("])"))
    nll, ce = (float(v) for v in loss_line.split()[:2])
    assert nll == pytest.approx(ce, abs=1e-5)


def test_receptive_field_table_is_the_computed_one():
    """The README's table against utils.receptive_field and the convs' channels, row by row, for every model."""
    rows = table_rows("Receptive fields")
    for column, cls in ((6, model.Model_1), (7, model.Model_2), (8, model.Model_3)):
        net = cls()
        computed = utils.receptive_field(net)
        assert len(rows) == len(computed)
        convs = dict(net.named_modules())
        for row, rf in zip(rows[1:], computed[1:]):
            assert [int(v) for v in row[1:6]] == [rf.kernel, rf.stride, rf.n, rf.jump, rf.rf], row[0]
            layer = convs[rf.layer]
            if isinstance(layer, torch.nn.Conv2d):
                assert row[column] == f"{layer.in_channels}→{layer.out_channels}", (row[0], cls.__name__)


def validation_driver():
    """``results/validation/run.py`` as a module (it is a script, not a package)."""
    return load_script("results/validation/run.py", "validation_run")


# step 3's ablation table, row by row: the arm and the arm its paired delta is taken against
ABLATION = [("step2_plain_16x3", None), ("step3_schedule", "step2_plain_16x3"),
            ("step3_schedule_rotation", "step3_schedule"),
            ("step3_schedule_rotation_dropout0.02", "step3_schedule_rotation"),
            ("v3_batch64", "step3_schedule_rotation_dropout0.02"), ("v4_block1_no_dropout", "v3_batch64"),
            ("v5_bf16", "v4_block1_no_dropout"), ("v6_ema", "v5_bf16"), ("v12_scale0.2", "v10_reference"),
            ("v17_elastic24", "v13_reference"), ("v33_block2_18first", ("v27_reference", "v28_reference"))]


def test_step3_ablation_table_is_what_the_validation_runs_give():
    """Each row's mean +- std over the seeds it shares with the row above, and its paired delta (SE) from run.py
    (design v33's row: against v27's and v28's reference runs, pooled, as its rule took it)."""
    run = validation_driver()
    story = README.split("### Step 3", 1)[1].split("\n## ", 1)[0]
    table = [line.strip().strip("|").split("|") for line in story.splitlines() if line.strip().startswith("|")]
    rows = [[cell.strip().strip("*").replace("−", "-") for cell in row] for row in table[2:] if len(row) == 5]
    assert len(rows) == len(ABLATION)
    for row, (arm, reference) in zip(rows, ABLATION):
        means = run.last_five_means(arm)
        references = (reference,) if isinstance(reference, str) else reference or ()
        shared = set.union(*(set(run.last_five_means(r)) for r in references)) if references else set(means)
        values = [means[seed] for seed in sorted(set(means) & shared)]
        assert row[1] == f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)})", arm
        if reference is None:
            assert row[2] == "–"
        else:
            printed = (run.compare(arm, reference) if isinstance(reference, str)
                       else run.pooled([(arm, r) for r in reference]))
            found = re.search(r"paired delta ([+-]\d\.\d\d) \(SE (\d\.\d\d), n = (\d+)\)", printed)
            assert row[2] == f"{found[1]} ({found[2]})" and int(found[3]) == len(values), arm


def step3_markdown() -> str:
    """The text of step 3's notebook's markdown cells, whitespace flattened."""
    cells = json.loads((ROOT / "S7_Step3.ipynb").read_text())["cells"]
    return " ".join(" ".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown").split())


def paired_delta3(runs_a: dict[int, dict], runs_b: dict[int, dict], stat=statistics.mean) -> tuple[str, str]:
    """``a - b`` of ``stat`` over the last five epochs, seed by seed over ``b``'s seeds, and its SE, each to three
    decimals as the READMEs quote them (a minus sign, not a hyphen): ``("+0.005", "0.017")``."""
    d = [stat(runs_a[s]["history"]["test_acc"][-5:]) - stat(runs_b[s]["history"]["test_acc"][-5:])
         for s in sorted(runs_b)]
    return f"{statistics.mean(d):+.3f}".replace("-", "−"), f"{statistics.stdev(d) / len(d) ** 0.5:.3f}"


def paired_delta(runs_a: dict[int, dict], runs_b: dict[int, dict]) -> str:
    """``a - b`` seed by seed over ``b``'s seeds, as the README quotes it: ``+0.02 (SE 0.02, n = 10``."""
    diffs = [last5_mean(runs_a[s]) - last5_mean(runs_b[s]) for s in sorted(runs_b)]
    se = statistics.stdev(diffs) / len(diffs) ** 0.5
    return f"{statistics.mean(diffs):+.2f} (SE {se:.2f}, n = {len(diffs)}".replace("-", "−")


def test_paired_check_quotes_design_v3s_model_on_design_v4s_seeds():
    """The post-hoc check: design v3's model on each of design v4's fresh seeds, paired seed by seed."""
    paired, fresh = records_in("design_v3/paired"), records_in("design_v4/Model_3")
    assert sorted(paired) == sorted(fresh)
    for record in paired.values():
        assert record["evaluated_on"] == "test set" and record["config"] == fresh[record["seed"]]["config"]
        assert record["parameters"] == 7442 and len(record["history"]["test_acc"]) == 15
    text = " ".join(section_text("## Fresh seeds").split())
    assert f"{mean_std(paired)} ({passing(paired)} of {len(paired)} seeds passing)" in text
    assert f"design v4 minus design v3, seed by seed, {paired_delta(fresh, paired)}" in text


def test_paired_check_quotes_design_v4s_float32_runs_on_design_v5s_seeds():
    """The post-hoc check: Model_3's recipe in float32 (design v4) on each of design v5's fresh seeds, seed by seed."""
    paired, fresh = records_in("design_v4/paired"), records_in("design_v5/Model_3")
    assert sorted(paired) == sorted(fresh)
    for record in paired.values():
        assert record["training_precision"] == "float32" and fresh[record["seed"]]["training_precision"] != "float32"
        assert record["config"] == {**fresh[record["seed"]]["config"], "bf16": False}
        assert record["evaluated_on"] == "test set" and len(record["history"]["test_acc"]) == 15
    text = " ".join(section_text("## Fresh seeds").split())
    assert f"{mean_std(paired)}, {passing(paired)} of {len(paired)} seeds passing" in text
    assert f"bf16 minus float32 there, seed by seed: {paired_delta(fresh, paired)}" in text


def test_paired_check_quotes_design_v5s_recipe_without_the_ema_on_design_v7s_seeds():
    """The post-hoc check: Model_3's recipe without the moving average (design v5) on each of design v7's fresh
    seeds. The training is the same, loss for loss; only the weights each epoch scores differ."""
    paired, fresh = records_in("design_v5/paired"), records_in("design_v7/Model_3")
    assert sorted(paired) == sorted(fresh)
    for record in paired.values():
        assert record["config"] == {**fresh[record["seed"]]["config"], "ema": 0.0} and record["config"]["ema"] == 0.0
        assert record["history"]["train_loss"] == fresh[record["seed"]]["history"]["train_loss"]
        assert record["evaluated_on"] == "test set" and len(record["history"]["test_acc"]) == 15
    text = " ".join(section_text("## Fresh seeds").split())
    assert f"{mean_std(paired)}, {passing(paired)} of {len(paired)} seeds passing" in text
    assert f"With minus without, seed by seed: {paired_delta(fresh, paired)}" in text


def test_paired_check_quotes_design_v7s_recipe_on_design_v12s_seeds():
    """The post-hoc check: design v7's recipe (no scaling) on each of design v12's fresh seeds, seed by seed; its
    folder's table and the README's Fresh seeds quote the JSON."""
    paired, fresh = records_in("design_v7/paired"), records_in("design_v12/Model_3")
    assert sorted(paired) == sorted(fresh) and len(paired) == 10
    for record in paired.values():
        assert record["config"] == {**fresh[record["seed"]]["config"], "scale": 0.0}
        assert fresh[record["seed"]]["config"]["scale"] == utils.RECIPES["Model_3"].scale > 0  # design v12's scaling
        assert record["evaluated_on"] == "test set" and len(record["history"]["test_acc"]) == 15
    folder = (ROOT / "results" / "design_v7" / "paired" / "README.md").read_text()
    rows = seed_rows(folder)
    assert len(rows) == 10
    for row in rows:
        rec = paired[int(row[0])]
        acc = rec["history"]["test_acc"][-5:]
        assert row[1:4] == [" ".join(f"{a:.2f}" for a in acc), f"{min(acc):.2f}", f"{sum(acc) / 5:.2f}"]
        assert row[5] == f"{last5_mean(fresh[int(row[0])]):.2f}"
    delta = paired_delta(fresh, paired)
    stated = f"{passing(paired)} of 10 seeds passing at {mean_std(paired)}"
    for text in (" ".join(section_text("## Fresh seeds").split()), " ".join(folder.split())):
        assert delta in text
    assert stated in " ".join(section_text("## Fresh seeds").split())


def test_paired_check_quotes_design_v12s_recipe_on_design_v17s_seeds():
    """The post-hoc check: design v12's recipe (no elastic distortion) on each of design v17's fresh seeds, seed by
    seed; its folder's table and the README's Fresh seeds quote the JSON."""
    paired, fresh = records_in("design_v12/paired"), records_in(V17)
    assert sorted(paired) == sorted(fresh) and len(paired) == 10
    for record in paired.values():
        assert record["config"] == {**fresh[record["seed"]]["config"], "elastic": 0.0}
        assert fresh[record["seed"]]["config"]["elastic"] == utils.RECIPES["Model_3"].elastic > 0
        assert record["evaluated_on"] == "test set" and len(record["history"]["test_acc"]) == 15
    folder = (ROOT / "results" / "design_v12" / "paired" / "README.md").read_text()
    rows = seed_rows(folder)
    assert len(rows) == 10
    for row in rows:
        acc = paired[int(row[0])]["history"]["test_acc"][-5:]
        assert row[1:4] == [" ".join(f"{a:.2f}" for a in acc), f"{min(acc):.2f}", f"{sum(acc) / 5:.2f}"]
        assert row[4] == ("yes" if min(acc) >= 99.4 else "**no**")
        assert row[5] == f"{last5_mean(fresh[int(row[0])]):.2f}"
    delta = paired_delta(fresh, paired)
    fresh_seeds = " ".join(section_text("## Fresh seeds").split())
    assert delta in fresh_seeds and delta in " ".join(folder.split())
    assert f"{passing(paired)} of 10 seeds passing at {mean_std(paired)}" in fresh_seeds


def errors_script():
    """``results/Model_3/errors.py`` as a module (it is a script, not a package)."""
    return load_script("results/Model_3/errors.py", "errors")


def test_error_overlap_counts_wrong_images_per_seed_and_across_seeds():
    """errors.py's counting on four images and three seeds, worked out by hand."""
    labels = torch.tensor([0, 1, 2, 3])
    counted = errors_script().overlap({7: torch.tensor([0, 1, 5, 9]), 8: torch.tensor([0, 4, 5, 3]),
                                       9: torch.tensor([0, 4, 5, 9])}, labels)
    assert counted["errors"] == {"7": 2, "8": 2, "9": 3} and counted["wrong"]["9"] == [1, 2, 3]
    assert counted["missed_by_exactly"] == {"1": 0, "2": 2, "3": 1} and counted["missed_by_any"] == 3
    assert counted["majority_vote_errors"] == 3  # image 1: 4 (two votes) against 1; image 3: 9 against 3
    assert counted["missed_by_all"] == [{"index": 2, "label": 2, "predicted": [5, 5, 5]}]


@pytest.mark.parametrize("design", ["v33", "v17"])
def test_errors_json_is_the_fresh_runs_last_epoch_and_the_readme_quotes_it(design):
    """Each design's errors.json: its per-seed counts are the epoch-15 accuracies the fresh runs recorded (the saved
    weights are that epoch's), its overlap counts add up to them, and the text quotes its numbers: the README's Fresh
    seeds for design v33's, results/design_v17/README.md for design v17's."""
    folder, seeds, build = errors_script().DESIGNS[design]
    found = json.loads((folder / "errors.json").read_text())
    fresh = records_in(str(folder.relative_to(ROOT / "results")))
    assert sorted(map(int, found["errors"])) == sorted(fresh) == list(seeds)
    assert {r["parameters"] for r in fresh.values()} == {utils.count_parameters(build())}
    for seed, n in found["errors"].items():
        assert n == round(100 * (100 - fresh[int(seed)]["history"]["test_acc"][-1])) == len(found["wrong"][seed])
    by_k = {int(k): n for k, n in found["missed_by_exactly"].items()}
    total = sum(found["errors"].values())
    assert sum(k * n for k, n in by_k.items()) == total and sum(by_k.values()) == found["missed_by_any"]
    assert len(found["missed_by_all"]) == by_k[10]
    pairs = [(m["label"], m["predicted"][0]) for m in found["missed_by_all"] if len(set(m["predicted"])) == 1]
    if design == "v17":
        text = " ".join((ROOT / "results" / "design_v17" / "README.md").read_text().split())
        assert len(pairs) == by_k[10]  # the same wrong answer on every seed
        assert pairs.count((9, 4)) == 2 and (6, 1) in pairs and (1, 7) in pairs
        always = f"{by_k[10]} images are missed by all ten seeds"
    else:
        text = " ".join(section_text("## Fresh seeds").split())
        mixed = [m for m in found["missed_by_all"] if len(set(m["predicted"])) > 1]
        assert len(mixed) == 1 and mixed[0]["label"] == 6 and sorted(mixed[0]["predicted"]) == [0, 0] + [5] * 8
        assert pairs.count((9, 4)) == 2 and (3, 5) in pairs and (4, 9) in pairs and (6, 1) in pairs
        always = f"{by_k[10]} images are missed by all ten seeds, ten of them with the same wrong answer on every seed"
        v17 = json.loads((ROOT / "results" / V17 / "errors.json").read_text())["missed_by_all"]
        shared = {m["index"] for m in found["missed_by_all"]} & {m["index"] for m in v17}
        assert (f"Of the {by_k[10]}, {len(shared)} are among the {len(v17)} images all ten of design v17's fresh "
                "models miss") in text
    counts = sorted(found["errors"].values())
    assert (f"{counts[0]}–{counts[-1]} errors per seed, {total} in all, on **{found['missed_by_any']} different "
            f"images**. {always}") in text
    most = sum(n for k, n in by_k.items() if k >= 6)
    assert f"{most} are missed by six seeds or more, and {by_k[1]} by one seed only" in text
    shared = sum(k * n for k, n in by_k.items() if k >= 6) / 10
    times = collections.Counter(i for images in found["wrong"].values() for i in images)
    hard = [sum(times[i] >= 6 for i in images) for images in found["wrong"].values()]
    rest = [len(images) - h for images, h in zip(found["wrong"].values(), hard)]
    assert (f"Of a seed's {total / 10} errors on average, {shared:.1f} are on images that six or more seeds miss "
            f"({min(hard)}–{max(hard)} per seed) and {total / 10 - shared:.1f} on images that five or fewer seeds "
            f"miss ({min(rest)}–{max(rest)} per seed): most of the spread between seeds ({counts[0]}–{counts[-1]} "
            f"errors at epoch 15, {100 - counts[-1] / 100:.2f}–{100 - counts[0] / 100:.2f} %)") in text
    assert max(hard) - min(hard) < max(rest) - min(rest)
    vote, params = found["majority_vote_errors"], 10 * utils.count_parameters(build())
    assert f"would make {vote} errors ({100 - vote / 100:.2f} %), but that is ten models, {params:,}" in text


def test_flips_json_scores_the_paired_checks_saved_models_and_its_readme_quotes_it():
    """flips.json's per-seed accuracies are the epoch-15 accuracies both runs' JSONs recorded (the saved weights are
    those runs' last epoch), its flip counts add up to them, and the folder's README quotes its numbers."""
    flips = json.loads((ROOT / "results" / "design_v7" / "paired" / "flips.json").read_text())
    paired, fresh = records_in("design_v7/paired"), records_in("design_v12/Model_3")
    assert flips["seeds"] == sorted(paired) == sorted(fresh)
    for i, seed in enumerate(flips["seeds"]):
        v12, v7 = flips["design_v12_acc"][i], flips["design_v7_acc"][i]
        assert (v12, v7) == (round(fresh[seed]["history"]["test_acc"][-1], 2),
                             round(paired[seed]["history"]["test_acc"][-1], 2))
        assert flips["only_design_v12_right"][i] - flips["only_design_v7_right"][i] == round(100 * (v12 - v7))
    gained, lost = flips["only_design_v12_right"], flips["only_design_v7_right"]
    text = " ".join((ROOT / "results" / "design_v7" / "paired" / "README.md").read_text().split())
    assert f"**{min(gained)}–{max(gained)} test images right that design v7's recipe gets wrong" in text
    assert f"and {min(lost)}–{max(lost)} the other way** (means {sum(gained) / 10} and {sum(lost) / 10}" in text
    assert f"{flips['images_flipped_on_any_seed']} images flip on at least one seed" in text
    assert f"{flips['paired_delta_points']:.3f} points".replace("-", "−") in text
    assert (f"{flips['images_flipped_toward_design_v7_on_5_or_more_seeds']} images go design v7's way on five or "
            f"more of the ten seeds, {flips['images_flipped_toward_design_v12_on_5_or_more_seeds']} go") in text
    assert f"about **{flips['sd_from_the_image_sample_5000_points']:.2f} points (SD) from the sample" in text
    assert f"about {flips['sd_from_the_seeds_10_seeds_5000_points']:.2f} from the seeds' noise" in text


# a run's JSON records the Config fields of its day: fields added later count as their defaults
CONFIG_DEFAULTS = {f.name: f.default for f in dataclasses.fields(utils.Config)}
DESIGN_V12 = {"elastic": 0.0}  # design v12's recipe: today's without the elastic distortion (design v17)


def test_every_validation_arm_rebuilds_the_config_its_committed_runs_recorded():
    """A rerun (or a new seed) of an arm repeats its experiment, although later designs changed Model_3's recipe.
    Fields a run's JSON predates (``translation``, ``bf16``, ``ema``) count as their defaults."""
    run = validation_driver()
    checked = 0
    for arm in run.ARMS:
        for path in (ROOT / "results" / "validation" / run.ROUNDS[arm] / arm).glob("seed*.json"):
            record = json.loads(path.read_text())
            built = vars(run.config(arm, record["seed"]))
            assert {**{k: CONFIG_DEFAULTS[k] for k in built}, **record["config"]} == built, path
            checked += 1
    assert checked >= 278


def test_design_v13s_and_v14s_arms_hold_out_the_seeds_block_and_each_changes_one_thing():
    """From v13 on, seed s holds out block s % 12 (seeds 39-46: blocks 3-10, never block 11, the split of every
    earlier round); each candidate of v13 and v14 differs from v13's reference (design v12's recipe) in its one
    field only."""
    run = validation_driver()
    for seed in range(39, 47):
        reference = vars(run.config("v13_reference", seed))
        assert reference == {**vars(utils.recipe("Model_3", **DESIGN_V12)), "scale": 0.2, "ema": 0.999,
                             "label_smoothing": 0.0, "seed": seed, "holdout": 5000, "holdout_block": seed % 12}
        assert vars(run.config("v13_scale0", seed)) == {**reference, "scale": 0.0}
        assert vars(run.config("v13_label_smoothing0.1", seed)) == {**reference, "label_smoothing": 0.1}
        assert vars(run.config("v14_cycle14_hold1", seed)) == {**reference, "hold_epochs": 1}
        assert vars(run.config("v14_ema0.9995", seed)) == {**reference, "ema": 0.9995}
    assert {run.config("v13_reference", s).holdout_block for s in range(39, 47)} == set(range(3, 11))
    assert run.config("v12_scale0.2", 31).holdout_block == -1  # earlier rounds: the last 5,000 images


def test_design_v17s_arms_add_elastic_distortion_only():
    """v17's candidates differ from v13's reference runs (design v12's recipe, seeds 39-46, blocks 3-10) in the
    elastic distortion only, at the plan's two doses; every earlier round pins it off."""
    run = validation_driver()
    for seed in range(39, 47):
        reference = vars(run.config("v13_reference", seed))
        assert reference["elastic"] == 0.0
        for alpha in (24.0, 48.0):
            assert vars(run.config(f"v17_elastic{alpha:.0f}", seed)) == {**reference, "elastic": alpha,
                                                                          "elastic_sigma": 4.0}
    # the rounds that train with the elastic distortion
    later = ("v17", "v18", "v19", "v20", "v21", "v22", "v23", "v24", "v25", "v26", "v27", "v28", "v29", "v30",
             "v31", "v32", "v33", "v34")
    assert all(run.config(arm, 1).elastic == 0.0 for arm in run.ARMS if run.ROUNDS[arm] not in later)


def test_design_v18s_arms_add_clean_epochs_only():
    """v18's candidates differ from v17's alpha-24 runs (design v17's recipe, seeds 39-46, blocks 3-10) in the
    number of clean last epochs only, at the plan's two lengths; every earlier round pins it off."""
    run = validation_driver()
    for seed in range(39, 47):
        reference = vars(run.config("v17_elastic24", seed))
        assert reference["clean_epochs"] == 0 and reference["elastic"] == 24.0
        assert reference == {**vars(utils.recipe("Model_3")), "seed": seed, "holdout": 5000,
                             "holdout_block": seed % 12}
        for n in (3, 5):
            assert vars(run.config(f"v18_clean{n}", seed)) == {**reference, "clean_epochs": n}
    assert all(run.config(arm, 1).clean_epochs == 0 for arm in run.ARMS
               if run.ROUNDS[arm] not in ("v18", "v20") and arm != "v31_stack")
    for seed in range(67, 79):  # design v20: v18's clean 5 again, against v19's reference runs on its new seeds
        assert vars(run.config("v20_clean5", seed)) == {**vars(run.config("v19_reference", seed)), "clean_epochs": 5}
        # design v21: half design v17's elastic dose, against the same reference runs
        assert vars(run.config("v21_elastic12", seed)) == {**vars(run.config("v19_reference", seed)), "elastic": 12.0}


def test_design_v22s_arms_change_the_batch_or_block_1s_first_conv_only():
    """v22's candidates, against v19's reference runs on seeds 67-78: batch 32 with everything else the reference's,
    and the reference's recipe with block 1's first conv at 10 channels (7,752 parameters, every RF unchanged)."""
    run = validation_driver()
    for seed in range(67, 79):
        reference = vars(run.config("v19_reference", seed))
        assert vars(run.config("v22_batch32", seed)) == {**reference, "batch_size": 32}
        assert vars(run.config("v22_block1_10", seed)) == reference
    ref, wide = run.ARMS["v19_reference"][1](), run.ARMS["v22_block1_10"][1]()
    assert run.ARMS["v22_batch32"][1] is run.ARMS["v19_reference"][1]
    assert utils.count_parameters(wide) == 7752 < 8000
    assert [r.rf for r in utils.receptive_field(wide)] == [r.rf for r in utils.receptive_field(ref)]
    convs = [m for m in wide.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs][:2] == [10, 16] and convs[1].in_channels == 10
    assert repr(wide.block2) == repr(ref.block2) and repr(wide.transition1) == repr(ref.transition1)


def test_design_v23s_arms_change_the_cycles_final_lr_only():
    """v23's candidates, against v19's reference runs on seeds 67-78: the reference's model and recipe with the cycle
    ending at (and the hold keeping) 0.0003 or 0.003 instead of lr / 100; every earlier round pins the default."""
    run = validation_driver()
    for seed in range(67, 79):
        reference = vars(run.config("v19_reference", seed))
        assert reference["final_lr"] == 0.0 and reference["lr"] / 100 == pytest.approx(0.001)
        for final in (0.0003, 0.003):
            assert vars(run.config(f"v23_final_lr{final}", seed)) == {**reference, "final_lr": final}
            assert run.ARMS[f"v23_final_lr{final}"][1] is run.ARMS["v19_reference"][1]
    assert all(run.config(arm, 1).final_lr == 0.0 for arm in run.ARMS if run.ROUNDS[arm] != "v23")


# rounds that change one setting of design v17's recipe on new seeds, with design v17's recipe run on them as the
# reference: round, seeds, the setting, its value in design v17's recipe, the candidates' arm-name stem and values
ONE_SETTING_ROUNDS = [("v24", range(79, 91), "rotation", 7.0, "rotation", (3.5, 0)),
                      ("v25", range(91, 103), "rotation", 7.0, "rotation", (0,)),
                      ("v27", range(115, 127), "translation", 0.0, "shift", (0.1, 0.05)),
                      ("v28", range(127, 139), "translation", 0.0, "shift", (0.05,))]


@pytest.mark.parametrize("round_, seeds, setting, reference_value, stem, values", ONE_SETTING_ROUNDS)
def test_one_setting_rounds_arms_are_design_v17s_recipe_on_new_seeds_with_that_setting_changed(
        round_, seeds, setting, reference_value, stem, values):
    """v24's and v25's (the rotation's range: 3.5 deg and none; none) and v27's and v28's (whole-pixel shifts:
    translate 0.1 and 0.05; 0.05) references are design v17's Model_3 and recipe on new seeds, each block once; their
    candidates build the reference's model and change that one setting only."""
    run = validation_driver()
    for seed in seeds:
        reference = vars(run.config(f"{round_}_reference", seed))
        assert reference == {**vars(utils.recipe("Model_3")), "seed": seed, "holdout": 5000,
                             "holdout_block": seed % 12}
        assert reference[setting] == reference_value
        for value in values:
            assert vars(run.config(f"{round_}_{stem}{value}", seed)) == {**reference, setting: value}
            assert run.ARMS[f"{round_}_{stem}{value}"][1] is run.ARMS["v19_reference"][1]
    assert {run.config(f"{round_}_reference", s).holdout_block for s in seeds} == set(range(12))


def test_only_their_own_rounds_change_the_rotation_or_shift():
    """Every step-3 arm outside v24 and v25 rotated by 7 deg (of v2's, all but the schedule-only arm that measured
    the rotation's effect), and no arm shifted but design v3's shift arm and v27's and v28's candidates."""
    run = validation_driver()
    earlier = {arm: run.config(arm, 1).rotation for arm in run.ARMS
               if run.ROUNDS[arm] not in ("v24", "v25") and run.ARMS[arm][2] == "Model_3"}
    assert {arm for arm, degrees in earlier.items() if degrees != 7.0} == {"step3_schedule"}
    shifted = {arm for arm in run.ARMS if run.config(arm, 1).translation}
    assert shifted == {"v3_shift", "v27_shift0.1", "v27_shift0.05", "v28_shift0.05"}


def v27_or_v28_reference(seed: int) -> str:
    """The run of design v17's recipe that designs v29-v33 pair seed ``seed`` (115-138) with: v27's on 115-126,
    v28's on 127-138."""
    return "v27_reference" if seed < 127 else "v28_reference"


def test_design_v29s_arms_are_design_v17s_recipe_on_v27s_and_v28s_seeds_with_the_hold_or_momentum_changed():
    """v29's candidates pair with v27's and v28's reference runs (design v17's Model_3 and recipe, seeds 115-138,
    each block twice): the same model, the reference's config but for the hold (5 epochs) or the momentum cycle
    (off); v29_reference, the reproduction check, is the reference's arm. No other arm changed either setting but
    design v14's one-epoch hold."""
    run = validation_driver()
    for seed in range(115, 139):
        reference = vars(run.config(v27_or_v28_reference(seed), seed))
        assert reference == {**vars(utils.recipe("Model_3")), "seed": seed, "holdout": 5000,
                             "holdout_block": seed % 12}
        assert vars(run.config("v29_reference", seed)) == reference
        assert vars(run.config("v29_hold5", seed)) == {**reference, "hold_epochs": 5}
        assert vars(run.config("v29_momentum0.9", seed)) == {**reference, "cycle_momentum": False}
    assert all(run.ARMS[arm][1] is run.ARMS["v28_reference"][1] is run.ARMS["v19_reference"][1]
               for arm in ("v29_reference", "v29_hold5", "v29_momentum0.9"))
    assert {arm for arm in run.ARMS if not run.config(arm, 1).cycle_momentum} == {"v29_momentum0.9"}
    holds = {arm: run.config(arm, 1).hold_epochs for arm in run.ARMS if run.ARMS[arm][2] == "Model_3"}
    assert {arm: hold for arm, hold in holds.items() if hold != 3} == {"v14_cycle14_hold1": 1, "v29_hold5": 5}


def test_design_v30s_arms_are_design_v17s_model_and_recipe_on_v27s_and_v28s_seeds_with_another_dropout_rate():
    """v30's candidates pair with v27's and v28's reference runs (seeds 115-138): the reference's config, and its
    model but for the rate of every dropout layer (0.01 or 0.05 after the transition and block 2's three convs,
    none in block 1); v30_reference, the reproduction check, is the reference's arm."""
    run = validation_driver()
    for seed in range(115, 139):
        reference = vars(run.config(v27_or_v28_reference(seed), seed))
        for arm in ("v30_reference", "v30_dropout0.01", "v30_dropout0.05"):
            assert vars(run.config(arm, seed)) == reference
    assert run.ARMS["v30_reference"][1] is run.ARMS["v28_reference"][1]
    reference = run.ARMS["v28_reference"][1]()
    for rate in (0.01, 0.05):
        candidate = run.ARMS[f"v30_dropout{rate}"][1]()
        assert [type(m) for m in candidate.modules()] == [type(m) for m in reference.modules()]
        assert [m.p for m in candidate.modules() if isinstance(m, torch.nn.Dropout)] == [rate] * 4
        assert not any(isinstance(m, torch.nn.Dropout) for m in candidate.block1.modules())
        assert utils.count_parameters(candidate) == utils.count_parameters(reference) == 7442


def test_design_v31s_arms_are_design_v17s_model_and_recipe_on_v27s_and_v28s_seeds_with_silu_and_the_stack():
    """v31's candidates pair with v27's and v28's reference runs (seeds 115-138). v31_silu: the reference's config,
    and v26's SiLU model (the same initial weights as the reference's); v31_stack: that model with dropout 0.01
    after the transition and block 2's convs (none in block 1), and the config with five clean epochs, nothing
    else."""
    run = validation_driver()
    for seed in range(115, 139):
        reference = vars(run.config(v27_or_v28_reference(seed), seed))
        assert vars(run.config("v31_silu", seed)) == reference
        assert vars(run.config("v31_stack", seed)) == {**reference, "clean_epochs": 5}
    torch.manual_seed(0)
    silu = run.ARMS["v26_silu"][1]()
    for arm, rate in (("v31_silu", 0.02), ("v31_stack", 0.01)):
        torch.manual_seed(0)
        candidate = run.ARMS[arm][1]()
        assert repr(candidate) == repr(silu).replace("p=0.02", f"p={rate}")
        assert [m.p for m in candidate.modules() if isinstance(m, torch.nn.Dropout)] == [rate] * 4
        assert not any(isinstance(m, torch.nn.Dropout) for m in candidate.block1.modules())
        assert all(torch.equal(a, b) for a, b in zip(candidate.state_dict().values(), silu.state_dict().values()))
        assert utils.count_parameters(candidate) == 7442


def test_design_v32s_alpha_12_arm_is_design_v17s_model_and_recipe_on_v27s_and_v28s_seeds_at_alpha_12():
    """v32's C1 pairs with v27's and v28's reference runs (seeds 115-138): the reference's model (the same initial
    weights) and config, but the elastic distortion at alpha 12 (v21's candidate; sigma 4 as before)."""
    run = validation_driver()
    for seed in range(115, 139):
        reference = vars(run.config(v27_or_v28_reference(seed), seed))
        assert reference["elastic"] == 24.0
        assert vars(run.config("v32_alpha12", seed)) == {**reference, "elastic": 12.0}
        assert vars(run.config("v32_alpha12", seed)) == {**vars(run.config("v21_elastic12", seed)),
                                                         "holdout_block": seed % 12}
    assert run.ARMS["v32_alpha12"][1] is run.ARMS["v28_reference"][1]


def test_design_v32s_shear_arm_is_design_v17s_model_and_recipe_on_v27s_and_v28s_seeds_with_a_shear_of_10_degrees():
    """v32's C2 pairs with v27's and v28's reference runs (seeds 115-138): the reference's model and config, with
    an x-shear of up to 10 degrees; no other arm shears."""
    run = validation_driver()
    for seed in range(115, 139):
        reference = vars(run.config(v27_or_v28_reference(seed), seed))
        assert vars(run.config("v32_shear", seed)) == {**reference, "shear": 10.0}
    assert run.ARMS["v32_shear"][1] is run.ARMS["v28_reference"][1]
    assert {arm for arm in run.ARMS if run.config(arm, 1).shear} == {"v32_shear"}
    assert utils.RECIPES["Model_3"].shear == 0.0


def test_design_v33s_arms_are_design_v17s_recipe_on_v27s_and_v28s_seeds_with_block_2_widened():
    """v33's candidates pair with v27's and v28's reference runs (seeds 115-138): the reference's config, and
    design v17's model but for one conv of block 2 at 18 channels (the first or the last), under 8,000 parameters,
    with every receptive field and every other layer as before."""
    run = validation_driver()
    for seed in range(115, 139):
        reference = vars(run.config(v27_or_v28_reference(seed), seed))
        for arm in ("v33_block2_18first", "v33_block2_18last"):
            assert vars(run.config(arm, seed)) == reference
    ref = run.ARMS["v28_reference"][1]()
    for arm, widths, params in (("v33_block2_18first", [18, 16, 16], 7878), ("v33_block2_18last", [16, 16, 18], 7754)):
        wide = run.ARMS[arm][1]()
        assert utils.count_parameters(wide) == params < 8000
        assert [r.rf for r in utils.receptive_field(wide)] == [r.rf for r in utils.receptive_field(ref)]
        assert [stage[0].out_channels for stage in wide.block2] == widths
        assert wide.head.in_channels == widths[-1]
        assert repr(wide.block1) == repr(ref.block1) and repr(wide.transition1) == repr(ref.transition1)
        assert not any(m.p != 0.02 for m in wide.modules() if isinstance(m, torch.nn.Dropout))


def test_design_v34s_arms_are_design_v17s_and_design_v33s_models_on_new_seeds_139_to_150():
    """v34 (a check that chooses nothing) runs design v17's arm and design v33's, today's Model_3, with the same
    recipe as v33's runs, on new seeds 139-150, each holding out block seed % 12 (every block once); no earlier arm
    ran those seeds."""
    run = validation_driver()
    assert run.ARMS["v34_reference"] is run.ARMS["v28_reference"]
    assert run.ARMS["v34_block2_18first"] is run.ARMS["v33_block2_18first"]
    assert repr(run.ARMS["v34_block2_18first"][1]()).split("(", 1)[1] == repr(model.Model_3()).split("(", 1)[1]
    for seed in range(139, 151):
        reference = vars(run.config("v34_reference", seed))
        assert reference == {**vars(run.config("v28_reference", 127)), "seed": seed, "holdout_block": seed % 12}
        assert vars(run.config("v34_block2_18first", seed)) == reference
    assert {run.config("v34_reference", s).holdout_block for s in range(139, 151)} == set(range(12))
    used = {int(f.stem[4:]) for f in (ROOT / "results" / "validation").glob("v*/*/seed*.json")
            if not f.parts[-3] == "v34"}
    assert used.isdisjoint(range(139, 151))


def test_design_v34s_runs_are_reported_as_the_json_files_give_them():
    """v34's twelve paired seeds: its README's rows, and the Δ of the mean that it, the README's step 3 and step 3's
    notebook quote (three decimals), as run.py's paired_deltas computes it from the committed runs."""
    run = validation_driver()
    seeds, deltas = run.paired_deltas("v34_block2_18first", "v34_reference")
    assert seeds == list(range(139, 151))
    quoted = (f"{statistics.mean(deltas):+.3f} (SE {statistics.stdev(deltas) / len(deltas) ** 0.5:.3f}, "
              f"n = 12)").replace("-", "−")
    text = (ROOT / "results" / "validation" / "v34" / "README.md").read_text()
    assert quoted in " ".join(text.split())
    for line in text.splitlines():
        if line.startswith("| 1"):
            seed = int(line.split("|")[1])
            record = json.loads((ROOT / "results" / "validation" / "v34" / "v34_block2_18first" /
                                 f"seed{seed}.json").read_text())
            assert " ".join(f"{a:.2f}" for a in record["history"]["test_acc"][-5:]) in line
    assert f"**{quoted}**" in " ".join(section_text("### Step 3").split())
    assert f"**{quoted}**" in step3_markdown()


def test_design_v26s_arms_are_design_v17s_recipe_on_new_seeds_with_another_activation():
    """v26's reference is design v17's Model_3 and recipe on new seeds 103-114 (each block once); its candidates
    train with the same recipe and the same initial weights, and differ from it only in every conv_block's
    activation (SiLU; LeakyReLU with slope 0.1); every other arm's model has ReLUs only."""
    run = validation_driver()
    for seed in range(103, 115):
        reference = vars(run.config("v26_reference", seed))
        assert reference == {**vars(utils.recipe("Model_3")), "seed": seed, "holdout": 5000,
                             "holdout_block": seed % 12}
        assert vars(run.config("v26_silu", seed)) == vars(run.config("v26_leaky", seed)) == reference
    assert {run.config("v26_reference", s).holdout_block for s in range(103, 115)} == set(range(12))
    assert run.ARMS["v26_reference"][1] is run.ARMS["v19_reference"][1]
    torch.manual_seed(0)
    ref = run.ARMS["v26_reference"][1]()
    for arm, activation in (("v26_silu", "SiLU()"), ("v26_leaky", "LeakyReLU(negative_slope=0.1)")):
        torch.manual_seed(0)
        candidate = run.ARMS[arm][1]()
        assert repr(candidate) == repr(ref).replace("ReLU()", activation) != repr(ref)
        assert repr(candidate).count(activation) == 6 == repr(ref).count("ReLU()")
        assert all(torch.equal(a, b) for a, b in zip(candidate.state_dict().values(), ref.state_dict().values()))
    others = [build() for arm, (_, build, _, _) in run.ARMS.items() if run.ROUNDS[arm] not in ("v26", "v31")]
    activations = {type(m) for net in others for m in net.modules()
                   if not list(m.children()) and not isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d,
                                                                    torch.nn.Dropout, torch.nn.Dropout2d,
                                                                    torch.nn.MaxPool2d,
                                                                    torch.nn.AdaptiveAvgPool2d))}
    assert activations == {torch.nn.ReLU}


def test_design_v26s_readme_quotes_the_committed_activation_costs():
    """The per-step costs v26's README quotes are activation_cost.json's medians, and SiLU's share is theirs."""
    folder = ROOT / "results" / "validation" / "v26"
    cost = json.loads((folder / "activation_cost.json").read_text())["ms_per_step_median"]
    flat = " ".join((folder / "README.md").read_text().split())
    assert (f"gives ReLU {cost['ReLU']:.2f}, LeakyReLU {cost['LeakyReLU(0.1)']:.2f}, SiLU {cost['SiLU']:.2f} and "
            f"GELU {cost['GELU']:.2f} ms (SiLU +{cost['SiLU'] / cost['ReLU'] * 100 - 100:.0f} %)") in flat


def test_design_v19s_arms_are_design_v17s_recipe_and_only_the_candidate_re_estimates():
    """v19's reference is design v17's Model_3 and recipe on the new seeds 67-78 (blocks seed % 12, so each block
    once); its candidate adds only the re-estimation, on 10,000 images; every earlier round pins it off."""
    run = validation_driver()
    assert sorted(s % 12 for s in range(67, 79)) == list(range(12))
    for seed in [*range(67, 79), 39]:
        reference = vars(run.config("v19_reference", seed))
        assert reference == {**vars(utils.recipe("Model_3")), "seed": seed, "holdout": 5000,
                             "holdout_block": seed % 12, "recalibrate_bn": 0}
        assert vars(run.config("v19_check_reference", seed)) == reference
        for arm in ("v19_recalibrate_bn", "v19_check"):
            assert vars(run.config(arm, seed)) == {**reference, "recalibrate_bn": 10000}
    assert reference == {**vars(run.config("v17_elastic24", 39)), "recalibrate_bn": 0}
    assert all(run.config(arm, 1).recalibrate_bn == 0 for arm in run.ARMS if arm not in run.DERIVED)


def test_design_v19s_reference_runs_are_its_candidates_runs_scored_as_design_v17_scores():
    """Each v19_reference file is written from its candidate run's uncalibrated scores (one run, both arms), and
    the check run of seed 39 repeats design v17's own validation run of seed 39 bit for bit (the README says so)."""
    base = ROOT / "results" / "validation"
    for candidate, reference, seeds in (("v19_recalibrate_bn", "v19_reference", range(67, 79)),
                                        ("v19_check", "v19_check_reference", [39])):
        for seed in seeds:
            c = json.loads((base / "v19" / candidate / f"seed{seed}.json").read_text())
            r = json.loads((base / "v19" / reference / f"seed{seed}.json").read_text())
            assert r["derived_from"].startswith(f"{candidate}/seed{seed}.json")
            assert r["history"]["test_acc"] == c["history"]["uncalibrated_test_acc"] != c["history"]["test_acc"]
            assert {k: v for k, v in r["history"].items() if not k.startswith("test")} == {
                k: v for k, v in c["history"].items() if not k.startswith(("test", "uncalibrated"))}
    v17 = json.loads((base / "v17" / "v17_elastic24" / "seed39.json").read_text())["history"]
    assert {k: v for k, v in r["history"].items() if k != "seconds"} == {k: v for k, v in v17.items() if k != "seconds"}
    text = " ".join((base / "v19" / "README.md").read_text().split())
    assert (f"The re-estimated copy scored {' '.join(f'{a:.2f}' for a in c['history']['test_acc'][-5:])} against "
            f"{' '.join(f'{a:.2f}' for a in v17['test_acc'][-5:])}") in text


def test_design_v20s_runs_repeat_their_reference_until_epoch_11_and_its_pooled_deltas_are_quoted():
    """Each v20_clean5 run draws what design v17's run of its seed draws until its first clean epoch (epoch 11), and
    the README quotes the pooled paired deltas (v18's eight seeds and v20's twelve) that run.py prints."""
    run = validation_driver()
    base = ROOT / "results" / "validation"
    for seed in range(67, 79):
        c = json.loads((base / "v20" / "v20_clean5" / f"seed{seed}.json").read_text())["history"]
        r = json.loads((base / "v19" / "v19_reference" / f"seed{seed}.json").read_text())["history"]
        assert all(c[k][:10] == r[k][:10] for k in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"))
        assert c["train_loss"][10] != r["train_loss"][10]
    pairs = [("v18_clean5", "v17_elastic24"), ("v20_clean5", "v19_reference")]
    # the pooled differences straight from the JSON files, not through run.py's own helpers
    seeds = {"v18_clean5": range(39, 47), "v20_clean5": range(67, 79)}

    def epochs_11_to_15(arm: str, seed: int) -> list[float]:
        record = base / arm.split("_")[0] / arm / f"seed{seed}.json"
        return json.loads(record.read_text())["history"]["test_acc"][-5:]

    text = " ".join((base / "v20" / "README.md").read_text().split())
    for stat, words in ((min, "the lowest epoch"), (statistics.mean, "the mean")):
        found = re.search(r"paired delta ([+-]\d\.\d\d) \(SE (\d\.\d\d), n = 20\)", run.pooled(pairs, stat))
        flat = [stat(epochs_11_to_15(a, s)) - stat(epochs_11_to_15(b, s)) for a, b in pairs for s in seeds[a]]
        assert len(flat) == 20
        mean, se = statistics.mean(flat), statistics.stdev(flat) / len(flat) ** 0.5
        assert f"{found[1]}" == f"{mean:+.2f}" and f"{found[2]}" == f"{se:.2f}"
        assert f"{words} **{mean:+.3f} (SE {se:.3f}, {mean / se:.1f} SE)" in text, words


def test_design_v15s_and_v16s_arms_differ_in_block_2_only():
    """v15's reference is design v12's Model_3 and recipe; its candidate has the same recipe and config, and a
    fourth 3x3 conv in block 2 (7,890 parameters, under the budget); seeds 47-54 hold out blocks 11 and 0-6."""
    run = validation_driver()
    for seed in range(47, 55):
        reference = vars(run.config("v15_reference", seed))
        assert reference == {**vars(utils.recipe("Model_3", **DESIGN_V12)), "seed": seed, "holdout": 5000,
                             "holdout_block": seed % 12}
        assert vars(run.config("v15_four_convs", seed)) == reference
    for seed in range(39, 47):  # v16: the same candidate against v13's reference runs
        assert vars(run.config("v16_four_convs", seed)) == vars(run.config("v13_reference", seed))
    assert run.ARMS["v16_four_convs"][1] is run.ARMS["v15_four_convs"][1]
    ref, four = run.ARMS["v15_reference"][1](), run.ARMS["v15_four_convs"][1]()
    assert repr(ref) == repr(run.design_v4_model())  # design v12's Model_3: Model_2's layers
    assert utils.count_parameters(four) == 7890 and utils.receptive_field(four)[-3].rf == 22
    assert repr(four.block1) == repr(ref.block1) and repr(four.head) == repr(ref.head)
    assert repr(four.transition1) == repr(ref.transition1)
    assert [m.p for m in four.modules() if isinstance(m, torch.nn.Dropout)] == [0.02] * 5  # transition, 4 convs
    assert [m.out_channels for m in four.block2.modules() if isinstance(m, torch.nn.Conv2d)] == [12, 12, 16, 16]


def test_design_v12s_validation_table_is_what_its_runs_give():
    """results/validation/v12/README.md, seed by seed: the reference's and both candidates' epochs 11-15, and the
    paired deltas run.py prints (the adoption rests on them)."""
    run = validation_driver()
    text = (ROOT / "results" / "validation" / "v12" / "README.md").read_text()
    rows = seed_rows(text)
    arms = ("v10_reference", "v12_scale0.1", "v12_scale0.2")
    epochs = {arm: run.last_five_means(arm, list) for arm in arms}  # seed -> epochs 11-15
    assert sorted(int(r[0]) for r in rows) == sorted(epochs["v12_scale0.2"]) == list(range(31, 39))
    for row in rows:
        for cell, arm in zip(row[1:4], arms):
            assert cell == " ".join(f"{a:.2f}" for a in epochs[arm][int(row[0])]), (row[0], arm)
    flat = " ".join(text.split())
    for arm in arms[1:]:
        assert bold_deltas([run.compare(arm, arms[0], stat) for stat in (min, statistics.mean)], 8) in flat, arm


@pytest.mark.parametrize("round_, arms, block_cell, seeds", [
    ("v13", ("v13_reference", "v13_scale0", "v13_label_smoothing0.1"),
     lambda b: f"{b} ({b * 5000:,}–{b * 5000 + 4999:,})", range(39, 47)),
    ("v14", ("v13_reference", "v14_cycle14_hold1", "v14_ema0.9995"), str, range(39, 47)),
    ("v15", ("v15_reference", "v15_four_convs"), str, range(47, 55)),
    ("v16", ("v13_reference", "v16_four_convs"), str, range(39, 47)),
    ("v17", ("v13_reference", "v17_elastic24", "v17_elastic48"), str, range(39, 47)),
    ("v18", ("v17_elastic24", "v18_clean3", "v18_clean5"), str, range(39, 47)),
    ("v19", ("v19_reference", "v19_recalibrate_bn"), str, range(67, 79)),
    ("v20", ("v19_reference", "v20_clean5"), str, range(67, 79)),
    ("v21", ("v19_reference", "v21_elastic12"), str, range(67, 79)),
    ("v22", ("v19_reference", "v22_batch32", "v22_block1_10"), str, range(67, 79)),
    ("v23", ("v19_reference", "v23_final_lr0.0003", "v23_final_lr0.003"), str, range(67, 79)),
    ("v24", ("v24_reference", "v24_rotation3.5", "v24_rotation0"), str, range(79, 91)),
    ("v25", ("v25_reference", "v25_rotation0"), str, range(91, 103)),
    ("v26", ("v26_reference", "v26_silu", "v26_leaky"), str, range(103, 115)),
    ("v27", ("v27_reference", "v27_shift0.1", "v27_shift0.05"), str, range(115, 127)),
    ("v28", ("v28_reference", "v28_shift0.05"), str, range(127, 139)),
])
def test_rotating_block_rounds_tables_are_what_their_runs_give(round_, arms, block_cell, seeds):
    """results/validation/v13/ to v28/ READMEs, seed by seed: the held-out block, the arms' epochs 11-15 and the
    paired deltas run.py prints (v14's reference is v13's runs); every run evaluated on its seed's block."""
    run = validation_driver()
    text = (ROOT / "results" / "validation" / round_ / "README.md").read_text()
    rows = seed_rows(text)
    epochs = {arm: run.last_five_means(arm, list) for arm in arms}
    assert sorted(int(r[0]) for r in rows) == sorted(epochs[arms[-1]]) == sorted(epochs[arms[0]]) == list(seeds)
    for row in rows:
        seed = int(row[0])
        assert row[1] == block_cell(seed % 12)
        for cell, arm in zip(row[2:2 + len(arms)], arms):
            assert cell == " ".join(f"{a:.2f}" for a in epochs[arm][seed]), (seed, arm)
            record = json.loads((ROOT / "results" / "validation" / run.ROUNDS[arm] / arm / f"seed{seed}.json")
                                .read_text())
            assert record["evaluated_on"] == f"training images {seed % 12 * 5000}-{seed % 12 * 5000 + 4999}"
    flat = " ".join(text.split()).replace("−", "-")
    for arm in arms[1:]:
        printed = [run.compare(arm, arms[0], stat) for stat in (min, statistics.mean)]
        assert bold_deltas(printed, len(seeds)) in flat, arm


# the table of rounds after design v17 in "How it got here, in short": candidate arm, reference arm, and (v20, v29-v33)
# the pair pooled with it
AFTER_V17 = [("v18_clean5", "v17_elastic24", None), ("v18_clean3", "v17_elastic24", None),
             ("v19_recalibrate_bn", "v19_reference", None),
             ("v20_clean5", "v19_reference", ("v18_clean5", "v17_elastic24")),
             ("v21_elastic12", "v19_reference", None), ("v22_batch32", "v19_reference", None),
             ("v22_block1_10", "v19_reference", None), ("v23_final_lr0.0003", "v19_reference", None),
             ("v23_final_lr0.003", "v19_reference", None), ("v24_rotation3.5", "v24_reference", None),
             ("v24_rotation0", "v24_reference", None), ("v25_rotation0", "v25_reference", None),
             ("v26_silu", "v26_reference", None), ("v26_leaky", "v26_reference", None),
             ("v27_shift0.1", "v27_reference", None), ("v27_shift0.05", "v27_reference", None),
             ("v28_shift0.05", "v28_reference", None),
             ("v29_hold5", "v27_reference", ("v29_hold5", "v28_reference")),
             ("v29_momentum0.9", "v27_reference", ("v29_momentum0.9", "v28_reference")),
             ("v30_dropout0.01", "v27_reference", ("v30_dropout0.01", "v28_reference")),
             ("v30_dropout0.05", "v27_reference", ("v30_dropout0.05", "v28_reference")),
             ("v31_silu", "v27_reference", ("v31_silu", "v28_reference")),
             ("v31_stack", "v27_reference", ("v31_stack", "v28_reference")),
             ("v32_alpha12", "v27_reference", ("v32_alpha12", "v28_reference")),
             ("v32_shear", "v27_reference", ("v32_shear", "v28_reference")),
             ("v33_block2_18first", "v27_reference", ("v33_block2_18first", "v28_reference")),
             ("v33_block2_18last", "v27_reference", ("v33_block2_18last", "v28_reference"))]
ADOPTED_AFTER_V17 = "v33_block2_18first"  # the one candidate of these rounds that cleared its rule
# rows pooled over more than one reference's seeds, and the number of pairs they pool
POOLED_N = {"v20_clean5": 20, "v29_hold5": 24, "v29_momentum0.9": 24, "v30_dropout0.01": 24, "v30_dropout0.05": 24,
            "v31_silu": 24, "v31_stack": 24, "v32_alpha12": 24, "v32_shear": 24, "v33_block2_18first": 24,
            "v33_block2_18last": 24}


def delta_cell(deltas: list[float]) -> str:
    """Paired differences as the rounds table quotes them: their mean and SE to three decimals, ``−`` for minus."""
    se = statistics.stdev(deltas) / len(deltas) ** 0.5
    return f"{statistics.mean(deltas):+.3f} (SE {se:.3f})".replace("-", "−")


def test_the_rounds_after_design_v17_table_is_what_their_runs_give():
    """Each row of the table of rounds after design v17: the paired deltas (lowest epoch, mean) and their SEs, to three
    decimals, from the committed runs (v20's row pooled with v18's seeds; v29's to v33's rows each candidate against
    v27's reference runs on seeds 115-126 and v28's on 127-138), in bold for the one candidate adopted (v33's first)."""
    run = validation_driver()
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in section_text("## How it got here, in short").splitlines() if line.startswith("| [v")]
    assert len(rows) == len(AFTER_V17)
    for row, (arm, reference, pooled_with) in zip(rows, AFTER_V17):
        assert row[0].startswith(f"[{run.ROUNDS[arm]}](results/validation/{run.ROUNDS[arm]}/)")
        cells = []
        for stat in (min, statistics.mean):
            seeds, deltas = run.paired_deltas(arm, reference, stat)
            if pooled_with:
                more_seeds, more = run.paired_deltas(*pooled_with, stat)
                deltas = deltas + more
                if pooled_with[0] == arm:  # one candidate against two rounds' references, on consecutive seeds
                    seeds = seeds + more_seeds
            assert len(deltas) == POOLED_N.get(arm, {39: 8}.get(seeds[0], 12))
            cells.append(delta_cell(deltas))
        assert [cell.strip("*") for cell in row[3:5]] == cells, arm
        assert (row[3:5] == [f"**{c}**" for c in cells]) == (arm == ADOPTED_AFTER_V17), arm  # bold: adopted
        assert row[2].startswith(f"{seeds[0]}–{seeds[-1]}")


@pytest.mark.parametrize("round_, seed, earlier", [("v29", 127, "v28_reference"), ("v30", 115, "v27_reference")])
def test_reproduction_checks_repeat_the_reused_reference_runs_bit_for_bit(round_, seed, earlier):
    """v29 and v30 pair their candidates with runs of design v17's recipe made in designs v27 and v28; each ran that
    recipe once (v29 on seed 127, v30 on seed 115), and got the earlier run of it, every epoch's losses,
    accuracies and LR equal, as their plans required."""
    run = validation_driver()
    folder = ROOT / "results" / "validation"
    new = json.loads((folder / round_ / f"{round_}_reference" / f"seed{seed}.json").read_text())
    old = json.loads((folder / run.ROUNDS[earlier] / earlier / f"seed{seed}.json").read_text())
    assert new["config"] == {**old["config"], "cycle_momentum": True}
    assert {k: v for k, v in new["history"].items() if k != "seconds"} == {
        k: v for k, v in old["history"].items() if k != "seconds"}
    assert sorted(run.last_five_means(f"{round_}_reference")) == [seed]


@pytest.mark.parametrize("round_, candidates", [("v29", ("v29_hold5", "v29_momentum0.9")),
                                                 ("v30", ("v30_dropout0.01", "v30_dropout0.05")),
                                                 ("v31", ("v31_silu", "v31_stack")),
                                                 ("v32", ("v32_alpha12", "v32_shear")),
                                                 ("v33", ("v33_block2_18first", "v33_block2_18last"))])
def test_tables_of_rounds_on_v27s_and_v28s_reference_runs_are_what_the_runs_give(round_, candidates):
    """results/validation/v29/ to v33/README.md, seed by seed (115-138): the held-out block, the reference's
    epochs 11-15 (v27's run on seeds 115-126, v28's on 127-138) and both candidates'; and each candidate's paired
    deltas over the 24 seeds as run.py --pooled prints them."""
    run = validation_driver()
    text = (ROOT / "results" / "validation" / round_ / "README.md").read_text()
    rows = seed_rows(text)
    assert [int(r[0]) for r in rows] == list(range(115, 139))
    for row in rows:
        seed = int(row[0])
        reference = v27_or_v28_reference(seed)
        assert row[1] == str(seed % 12)
        for cell, arm in zip(row[2:5], (reference, *candidates)):
            assert cell == " ".join(f"{a:.2f}" for a in run.last_five_means(arm, list)[seed]), (seed, arm)
    flat = " ".join(text.split()).replace("−", "-")
    for arm in candidates:
        pairs = [(arm, "v27_reference"), (arm, "v28_reference")]
        assert bold_deltas([run.pooled(pairs, stat) for stat in (min, statistics.mean)], 24) in flat, arm


@pytest.mark.parametrize("arm, first_look, first_reference, round_", [
    ("v31_silu", "v26_silu", "v26_reference", "v26"), ("v32_alpha12", "v21_elastic12", "v19_reference", "v21")])
def test_second_looks_on_v27s_and_v28s_seeds_pooled_with_the_first_look_are_what_their_runs_give(
        arm, first_look, first_reference, round_):
    """v31's SiLU arm is a second look at v26's, v32's alpha 12 at v21's; the second look's README and the rounds
    table also quote the two pooled (n = 36: the first look's twelve pairs and the second's twenty-four), for
    information (the second look's rule reads its own 24)."""
    run = validation_driver()
    cells = []
    for stat in (min, statistics.mean):
        deltas = run.paired_deltas(first_look, first_reference, stat)[1]
        for reference in ("v27_reference", "v28_reference"):
            deltas += run.paired_deltas(arm, reference, stat)[1]
        assert len(deltas) == 36
        cells.append(delta_cell(deltas))
    quoted = f"pooled with {round_}'s, n = 36: {cells[0]} / {cells[1]}"
    assert quoted in section_text("## How it got here, in short")
    assert quoted in " ".join((ROOT / "results" / "validation" / run.ROUNDS[arm] / "README.md").read_text().split())


@pytest.mark.parametrize("round_, candidate, earlier", [("v25", "rotation0", "v24"), ("v28", "shift0.05", "v27")])
def test_second_looks_pooled_deltas_are_what_their_and_the_earlier_rounds_runs_give(round_, candidate, earlier):
    """v25's and v28's rules pool their twelve pairs with the earlier round's pairs of the same candidate (v24's no
    rotation, v27's 1-px shifts; n = 24); the rounds table and the round's README quote the pooled Δs to three
    decimals."""
    run = validation_driver()
    cells = []
    for stat in (min, statistics.mean):
        deltas = run.paired_deltas(f"{round_}_{candidate}", f"{round_}_reference", stat)[1]
        deltas += run.paired_deltas(f"{earlier}_{candidate}", f"{earlier}_reference", stat)[1]
        assert len(deltas) == 24
        cells.append(delta_cell(deltas))
    assert f"pooled with {earlier}'s, n = 24: {cells[0]} / {cells[1]}" in section_text("## How it got here, in short")
    folder = " ".join((ROOT / "results" / "validation" / round_ / "README.md").read_text().split())
    assert f"**Pooled with {earlier}'s** (n = 24): {cells[0].split()[0]} (SE" in folder


def test_validation_driver_rejects_a_bad_compare_in_one_line():
    done = subprocess.run([sys.executable, "results/validation/run.py", "--compare", "v4_head24", "no_such_arm"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: --compare takes two arms of: ") and done.stderr.count("\n") == 1
    paired = subprocess.run([sys.executable, "results/validation/run.py", "--compare", "v4_head24",
                             "v4_block1_no_dropout"], cwd=ROOT, capture_output=True, text=True)
    assert paired.returncode == 0 and "paired delta -0.07 (SE 0.03, n = 3)" in paired.stdout


def test_speed_section_quotes_the_committed_benchmark_of_todays_recipe():
    """The benchmark table in Speed, row by row, is ``results/bench_cpu.json``, and that benchmark ran Model_3's
    recipe as it is now (bench.py times a constant LR). Fields the JSON predates (``nesterov``) count as their
    defaults."""
    record = json.loads((ROOT / "results" / "bench_cpu.json").read_text())
    assert record["model"] == "Model_3" and record["cpu_native_bf16"] is True  # else no bf16/float32 pair
    assert {**CONFIG_DEFAULTS, **record["config"]} == {**vars(utils.recipe("Model_3")), "schedule": "constant"}
    variants = {"default NCHW layout": "device, NCHW", "conventional": "conventional",
                "design v3's dropout": "device, v3 dropout", "float32": "device, float32",
                "without the elastic distortion": "device, no elastic", "bf16": "device"}
    lines = [line for line in section_text("## Speed").splitlines()
             if line.startswith(("| device-resident", "| conventional"))]
    assert len(lines) == len(record["pipelines"]) == 6
    seen = set()
    for line in lines:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        key = next(v for k, v in variants.items() if k in cells[0])
        p, seen = record["pipelines"][key], seen | {key}
        low, high = p["spread_seconds"]
        assert cells[1] == f"{p['median_epoch_seconds']:.2f} ({low:.2f}–{high:.2f})", cells[0]
        assert cells[2] == f"{p['images_per_second']:,.0f}" and cells[3] == f"{p['median_eval_seconds']:.2f}"
    assert seen == set(record["pipelines"])  # one row per variant
    text = " ".join(section_text("## Speed").split())
    assert f"takes {record['full_run_seconds']:.0f} s without the moving average's updates" in text
    assert f"is **{record['speedup']:.2f}×** faster than the conventional one" in text
    median = {k: p["median_epoch_seconds"] for k, p in record["pipelines"].items()}
    for key, words in (("device, float32", "bf16 autocast makes an epoch"),
                       ("device, v3 dropout", "no dropout in block 1"), ("device, NCHW", "`channels_last`")):
        assert f"{words} **{median[key] / median['device']:.2f}×**" in text, key
    assert f"the elastic distortion makes it **{median['device'] / median['device, no elastic']:.2f}×** slower" in text
    floor = f"÷ {record['matmul_macs_per_second'] / 1e9:.1f} G multiply-adds/s"
    assert floor in text and f"is {record['floor_epoch_seconds']:.2f} s per epoch" in text


GPU_CHECK_SEEDS = list(range(9601, 9641))  # named in results/gpu/README.md before the call


def gpu_jobs() -> list[dict]:
    """The jobs the lent GPU's two calls finished, as their queue.json files list them."""
    calls = (ROOT / "results" / "gpu" / "calls").glob("call*_queue.json")
    return [job for call in sorted(calls) for job in json.loads(call.read_text())["done"]]


def test_gpu_check_is_design_v12s_recipe_on_its_named_seeds_in_order_and_reported():
    """results/gpu/: the check runs are design v12's recipe (float32 on the lent GPU) on the first seeds of the list
    its README named before the call, each a job the queue finished (rc 0), none left out; the table, the pass count
    and the level in its README, the README's Fresh seeds and the headline are the JSON's."""
    checks = records_in("gpu/check")
    text = (ROOT / "results" / "gpu" / "README.md").read_text()
    flat = " ".join(text.split())
    assert "**Check seeds 9601–9640** have never been used by any run" in flat
    assert sorted(checks) == GPU_CHECK_SEEDS[:len(checks)] and len(checks) == 18
    jobs = gpu_jobs()
    assert all(job["rc"] == 0 for job in jobs)
    assert sorted(int(job["job"][6:]) for job in jobs if job["job"].startswith("check_")) == sorted(checks)
    for seed, record in checks.items():
        assert utils.same_experiment(record["config"], utils.recipe("Model_3", seed=seed, **DESIGN_V12))
        assert record["device"] == "NVIDIA H200" and record["training_precision"] == "float32"
        assert record["parameters"] == 7442
    check_rows(seed_rows(text.split("## Result: design v12", 1)[1]), checks)
    level = f"**{passing(checks)} of 18** seeds hold"
    assert level in flat and f"**mean of the last five epochs {mean_std(checks)}** (n = 18)" in flat
    readme = " ".join(section_text("## Fresh seeds").split())
    assert f"**{passing(checks)} of 18 seeds passing, {mean_std(checks)}** (n = 18)" in readme
    story = " ".join(section_text("## How it got here, in short").split())
    assert f"held the bar on **{passing(checks)} of 18**, {mean_std(checks)}" in story


def test_speed_on_a_gpu_quotes_the_committed_gpu_runs():
    """Speed's GPU table: the timed run is design v12's recipe alone on the GPU, the benchmark ran that recipe too
    (bench.py times a constant LR), and the table's times are theirs."""
    timing = json.loads((ROOT / "results" / "gpu" / "timing" / "Model_3_seed9201.json").read_text())
    bench = json.loads((ROOT / "results" / "gpu" / "bench_NVIDIA_H200.json").read_text())
    assert timing["device"] == bench["device"] == "NVIDIA H200"
    assert utils.same_experiment(timing["config"], utils.recipe("Model_3", seed=9201, **DESIGN_V12))
    assert {**CONFIG_DEFAULTS, **bench["config"]} == {**vars(utils.recipe("Model_3", **DESIGN_V12)),
                                                      "schedule": "constant"}
    assert [job["job"] for job in gpu_jobs() if not job["pool"]] == ["bench", "timing_9201"]  # each alone
    gpu = section_text("## Speed").split("**On a GPU**", 1)[1]
    assert f"**{timing['wall_seconds']:.0f} s**" in gpu
    for name in ("device", "conventional"):
        # in epoch order: the table says the first is the one with the warm-up
        assert ", ".join(f"{e:.2f} s" for e in bench["pipelines"][name]["epoch_seconds"]) in gpu


def test_design_v16s_pooled_decision_is_what_the_runs_give():
    """v16's README quotes the pooled paired deltas over v15's and v16's sixteen seeds as run.py prints them."""
    run = validation_driver()
    pairs = [("v15_four_convs", "v15_reference"), ("v16_four_convs", "v13_reference")]
    found = [re.search(r"paired delta ([+-]\d\.\d\d) \(SE (\d\.\d\d), n = 16\)", run.pooled(pairs, stat))
             for stat in (min, statistics.mean)]
    flat = " ".join((ROOT / "results" / "validation" / "v16" / "README.md").read_text().split())
    assert (f"**Pooled with v15's eight GPU seeds (n = 16): {found[0][1]} (SE {found[0][2]}) on the lowest epoch, "
            f"{found[1][1]} (SE {found[1][2]}) on the mean.**") in flat
    done = subprocess.run([sys.executable, "results/validation/run.py", "--pooled", "v15_four_convs", "v15_reference",
                           "v16_four_convs"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == "" and done.stderr.count("\n") == 1
    for pair in (["v16_four_convs", "v15_reference"], ["v15_four_convs", "v15_reference"]):  # no shared seed; twice
        done = subprocess.run([sys.executable, "results/validation/run.py", "--pooled", "v15_four_convs",
                               "v15_reference", *pair], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 2 and done.stdout == "" and done.stderr.startswith("error: --pooled: ")
        assert done.stderr.count("\n") == 1


def later_runs_of_model_3() -> list[dict]:
    """The runs of today's Model_3 and recipe after its fresh runs: the ten more seeds, the rerun of seed 9831 and
    step 3's notebook run."""
    return [*records_in("Model_3/more_seeds").values(), *records_in("Model_3/rerun").values(),
            json.loads((ROOT / "results" / "step3_notebook.json").read_text())]


def test_at_a_glance_tables_are_the_committed_runs():
    """The two tables under the headline: the goal lines (fresh seeds, level, run time) and each step's parameters
    and test-seed level are what the JSON files say."""
    head = README.split("## Contents", 1)[0]
    fresh = runs(3)
    both = {**fresh, **records_in("Model_3/more_seeds")}
    rows = {r[0]: r[1:] for r in ([c.strip() for c in line.strip().strip("|").split("|")]
                                  for line in head.splitlines() if line.startswith("| "))}
    f32 = {**records_in("Model_3/float32"), **records_in("Model_3/more_seeds/float32")}
    assert sorted(f32) == sorted(both)
    f32_30 = {**f32, **records_in("Model_3/float32_9711-9720")}
    assert len(f32_30) == 30
    everywhere = passing(both) == passing(f32) == 20 and passing(f32_30) == 30
    assert rows["≥ 99.40 % in every one of epochs 11–15 on 10 of 10 fresh seeds"] == [
        f"{passing(fresh)} of 10 (design v33, CPU, bf16); {passing(both)} of 20 with ten more seeds; trained in float32 "
        f"on this CPU, {passing(f32)} of the same 20, and {passing(f32_30)} of 30 with ten further seeds",
        "**missed**" if passing(fresh) < 10 else "met" if everywhere else
        "met on the ten fresh seeds; **not on every further seed**"]
    assert rows["mean ≥ 99.52 %"] == [
        f"{mean_std(fresh)} (n = 10)",
        "**missed**" if statistics.mean(map(last5_mean, fresh.values())) < 99.52 else "met"]
    seconds = [r["wall_seconds"] for r in fresh.values()]
    within = sum(t <= 240 for t in seconds)
    later = [r["wall_seconds"] for r in later_runs_of_model_3()]
    assert len(later) == 12
    assert rows["one 15-epoch run ≤ 4 min on one CPU thread"] == [
        f"{min(seconds):.0f}–{max(seconds):.0f} s (the ten fresh runs, bf16 on this CPU; {within} of 10 ≤ 240 s); "
        f"{min(later):.0f}–{max(later):.0f} s (the 12 later runs of the same model and recipe: ten more seeds, seed "
        f"9831 again and step 3's notebook; {sum(t <= 240 for t in later)} of 12 ≤ 240 s)",
        "met" if within == 10 else "**missed**"]
    assert rows["< 8,000 parameters, ≤ 15 epochs, BatchNorm, dropout, GAP"][0] == (
        f"Model_3: {utils.count_parameters(model.Model_3()):,} parameters, {utils.recipe('Model_3').epochs} epochs")
    for step, n in ((1, "3"), (2, "3"), (3, "10 fresh")):
        name = f"Model_{step}"
        cells = next(r for k, r in rows.items() if k.startswith(f"{step} — "))
        assert cells == [name, f"{utils.count_parameters(getattr(model, name)()):,}", f"{mean_std(runs(step))} ({n})"]


def test_gpu_calls_finished_a_prefix_of_queue_pys_fixed_order():
    """Nothing was skipped or reordered by what a run showed: the two calls finished the two solo jobs, then the
    first jobs of queue.py's pool order (the order its README describes), and the second call's unstarted jobs are
    the rest of that order."""
    queue = load_script("results/gpu/queue.py", "gpu_queue")
    pool = [name for name, _, _ in queue.pool_jobs("data")]
    assert pool[:13] == [f"check_{s}" for s in range(9601, 9611)] + ["v15_reference_47", "v15_four_convs_47",
                                                                      "check_9611"]
    assert pool[-10:] == [f"check_{s}" for s in range(9631, 9641)] and len(pool) == 80
    done = [job["job"] for job in gpu_jobs()]
    assert [name for name in done if not name.startswith(("check", "v15"))] == ["bench", "timing_9201"]
    finished = [name for name in done if name.startswith(("check", "v15"))]
    assert len(set(finished)) == len(finished) and set(finished) == set(pool[:len(finished)])
    last = json.loads((ROOT / "results" / "gpu" / "calls" / "call2_queue.json").read_text())
    assert last["not_started"] == pool[len(finished):] and last["unfinished"] == []
    bad = subprocess.run([sys.executable, "results/gpu/queue.py", "--data-dir", "data", "--out", "results",
                          "--deadline", "5", "--resume", "README.md"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("queue.py: error: --resume README.md: not the queue.json of an earlier call")


def test_model_3_is_the_arm_design_v33s_round_adopted_with_its_recipe():
    """Model_3 has the layers of the arm design v33's validation adopted (block 2 8->18->16->16, 7,878 parameters),
    module for module; the recipe is the one v33 kept (its arm runs Model_3's)."""
    run = validation_driver()
    assert repr(model.Model_3()).split("(", 1)[1] == repr(run.ARMS["v33_block2_18first"][1]()).split("(", 1)[1]
    assert utils.count_parameters(model.Model_3()) == 7878
    assert run.ARMS["v33_block2_18first"][2:] == ("Model_3", {})


def test_design_v33s_fresh_seeds_are_run_once_and_every_run_is_reported():
    """The ten fresh test seeds design v33's plan named, each run once with Model_3's recipe and design v33's 7,878
    parameters: results/Model_3/README.md lists every run and quotes their outcome."""
    records = runs(3)
    assert sorted(records) == planned_fresh_seeds("results/validation/v33/PLAN.md")
    for seed, rec in records.items():
        assert rec["model"] == "Model_3" and rec["parameters"] == utils.count_parameters(model.Model_3()) == 7878
        assert utils.same_experiment(rec["config"], utils.recipe("Model_3", seed=seed))
        assert rec["training_precision"] == "bfloat16 autocast" and rec["device"] == "cpu (x86_64, 1 threads)"
    text = (ROOT / "results" / "Model_3" / "README.md").read_text()
    rows = seed_rows(text)
    check_timed_rows(rows, records)
    seconds = [r["wall_seconds"] for r in records.values()]
    n, within = passing(records), sum(t <= 240 for t in seconds)
    flat = " ".join(text.split())
    assert f"**{n} of 10 seeds**" in flat and f"**{mean_std(records)}**" in flat
    assert f"**Seconds per run: {min(seconds):.0f}–{max(seconds):.0f}**, {within} of 10 within 240 s" in flat


def test_design_v17s_recipe_on_design_v33s_seeds_is_every_run_and_the_paired_deltas_are_quoted():
    """results/design_v17/paired/: design v17's Model_3 and recipe (train.py --model Model_3 before the switch) once
    on each of design v33's fresh seeds, a check that chose nothing; its README lists every run, and it, the README's
    headline and Speed quote design v33 minus design v17 seed by seed and the runs' times."""
    paired, fresh = records_in("design_v17/paired"), runs(3)
    assert sorted(paired) == sorted(fresh) == list(range(9831, 9841))
    for seed, rec in paired.items():
        assert rec["parameters"] == utils.count_parameters(validation_driver().design_v4_model()) == 7442
        assert utils.same_experiment(rec["config"], utils.recipe("Model_3", seed=seed))
    text = (ROOT / "results" / "design_v17" / "paired" / "README.md").read_text()
    check_rows(seed_rows(text), paired)
    cells = {}
    for name, stat in (("mean", statistics.mean), ("lowest", min)):
        deltas = [stat(fresh[s]["history"]["test_acc"][-5:]) - stat(paired[s]["history"]["test_acc"][-5:])
                  for s in sorted(paired)]
        cells[name] = (f"{statistics.mean(deltas):+.2f} (SE {statistics.stdev(deltas) / 10 ** 0.5:.2f})",
                       f"{statistics.mean(deltas):+.3f} (SE {statistics.stdev(deltas) / 10 ** 0.5:.3f})")
    flat = " ".join(text.split())
    assert f"**{passing(paired)} of 10 seeds**" in flat and f"**{mean_std(paired)}**" in flat
    assert (f"**Design v33 minus design v17, seed by seed: {cells['mean'][1]} on the mean of epochs 11–15 and "
            f"{cells['lowest'][1]} on the lowest of them") in flat
    head = " ".join(README.split("## Contents", 1)[0].split())
    assert (f"held the bar on {passing(paired)} of 10 at {mean_std(paired)}: design v33 minus design v17, seed by "
            f"seed, is {cells['mean'][0]} on the mean and {cells['lowest'][0]} on the lowest epoch (n = 10)") in head
    speed = section_text("## Speed")
    seconds = [r["wall_seconds"] for r in fresh.values()]
    assert (f"fresh seeds 9831–9840** | **{min(seconds) / 60:.1f}–{max(seconds) / 60:.1f} min** ({min(seconds):.0f}–"
            f"{max(seconds):.0f} s; {sum(t <= 240 for t in seconds)} of 10 ≤ 240 s) |") in speed
    seconds = [r["wall_seconds"] for r in paired.values()]
    assert (f"for about two minutes) | {min(seconds) / 60:.1f}–{max(seconds) / 60:.1f} min ({min(seconds):.0f}–"
            f"{max(seconds):.0f} s) |") in speed


def test_design_v17s_recipe_on_design_v33s_ten_more_seeds_is_every_run_and_the_pooled_deltas_are_quoted():
    """results/design_v17/paired/more_seeds/: design v17's model and recipe once on each of design v33's ten more
    seeds, a later check that chose nothing; its README lists every run, and it, the README (headline, step 3, Fresh
    seeds), step 3's notebook and Model_3's docstring quote design v33 minus design v17 over all twenty paired seeds as
    the JSON files give it."""
    v17 = records_in("design_v17/paired/more_seeds")
    v33 = records_in("Model_3/more_seeds")
    assert sorted(v17) == sorted(v33) == list(range(9841, 9851))
    for seed, rec in v17.items():
        assert rec["model"] == "design_v17" and rec["training_precision"] == "bfloat16 autocast"
        assert rec["parameters"] == utils.count_parameters(validation_driver().design_v4_model()) == 7442
        assert utils.same_experiment(rec["config"], utils.recipe("Model_3", seed=seed))
    text = (ROOT / "results" / "design_v17" / "paired" / "more_seeds" / "README.md").read_text()
    check_rows(seed_rows(text), v17)

    (m10, s10), (l10, sl10) = (paired_delta3(v33, v17, stat) for stat in (statistics.mean, min))
    v17_all, v33_all = {**records_in("design_v17/paired"), **v17}, {**runs(3), **v33}
    (m20, s20), (l20, sl20) = (paired_delta3(v33_all, v17_all, stat) for stat in (statistics.mean, min))
    pooled = f"{m20} (SE {s20}, n = 20) on the mean and {l20} (SE {sl20}) on the lowest epoch"
    counts = f"design v17 held the bar on {passing(v17_all)} and design v33 on {passing(v33_all)}"
    flat = " ".join(text.split())
    assert f"**Design v17 held the bar on {passing(v17)} of 10 of these seeds at {mean_std(v17)}**" in flat
    assert f"on these ten: {m10} (SE {s10}) on the mean of epochs 11–15 and {l10} (SE {sl10}) on the lowest" in flat
    assert f"(9831–9850): {m20} (SE {s20}, n = 20) on the mean and {l20} (SE {sl20}) on the lowest epoch**" in flat
    assert f"Over the same twenty seeds {counts}" in flat
    head = " ".join(README.split("## Contents", 1)[0].split())
    assert f"is {pooled}, and on the same twenty seeds {counts}" in head
    step3 = " ".join(section_text("### Step 3").split())
    assert f"over all twenty **{pooled}**" in step3 and f"on the same twenty seeds {counts}" in step3
    fresh_seeds = " ".join(section_text("## Fresh seeds").split())
    assert f"**{passing(v17)} of 10 seeds passing at {mean_std(v17)}**" in fresh_seeds
    assert f"**Pooled with the paired check on the fresh seeds above: {pooled}**" in fresh_seeds
    notebook = step3_markdown()
    assert f"**{m20} (SE {s20}, n = 20)** on the mean and {l20} (SE {sl20}) on the lowest epoch" in notebook
    assert f"on the same twenty seeds {counts}" in notebook
    docstring = " ".join(model.Model_3.__doc__.split())
    assert f"{m20.replace('−', '-')} (SE {s20}, n = 20) on the mean" in docstring


@pytest.mark.parametrize("script, args, words", [
    ("design_v17/paired/more_seeds/run.py", ["1"], "run.py: error: MNIST not found in "),
    ("design_v3/paired/run.py", ["424242"], "run.py: error: MNIST not found in "),
    ("validation/run.py", ["v4_head24", "424242"], "run.py: error: MNIST not found in "),
    ("design_v7/paired/flips.py", [], "flips.py: error: MNIST not found in "),
    ("gpu/queue.py", ["--out", ".", "--deadline", "5"], "queue.py: error: --data-dir "),
])
def test_drivers_refuse_a_folder_without_mnist_in_one_line(tmp_path, script, args, words):
    """The drivers under results/ check the data before any run: a wrong --data-dir is one line on stderr and
    exit 2, and nothing under results/ is written or rewritten (gpu/queue.py's jobs would each rewrite a committed
    log)."""
    def snapshot() -> dict:
        return {p: p.stat().st_mtime_ns for p in (ROOT / "results").rglob("*") if "__pycache__" not in p.parts}

    before = snapshot()
    done = subprocess.run([sys.executable, str(ROOT / "results" / script), "--data-dir", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(words), done.stderr
    assert snapshot() == before


def test_gpu_queue_checks_a_relative_data_dir_where_its_jobs_will_look(tmp_path):
    """Its jobs run in the repository root: a relative --data-dir that holds MNIST only from the caller's folder
    must be refused there, before a job starts (each would rewrite a committed log)."""
    name = f"mnist-only-here-{tmp_path.name}"  # a folder the repository root cannot hold
    for train in (True, False):
        write_idx(tmp_path / name, train, *synthetic_digits(10, seed=1))
    done = subprocess.run([sys.executable, str(ROOT / "results" / "gpu" / "queue.py"), "--data-dir", name, "--out",
                           ".", "--deadline", "5"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and f"no MNIST in {ROOT / name / 'MNIST' / 'raw'}" in done.stderr


def test_float32_check_on_ten_further_seeds_is_reported_alone_and_pooled():
    """results/Model_3/float32_9711-9720/: design v33 trained in float32 on ten further test seeds (no bf16 runs);
    its README lists every run with its time, and it, the README (headline, at a glance, step 3, Fresh seeds, the
    count of test runs, Speed, Running it), step 3's notebook, Model_3's docstring and results/Model_3/README.md
    quote the ten and the pool of thirty float32 seeds as the JSON files give them."""
    ten = records_in("Model_3/float32_9711-9720")
    assert sorted(ten) == list(range(9711, 9721))
    config = records_in("Model_3/more_seeds/float32")[9841]["config"]
    for seed, record in ten.items():
        assert record["config"] == {**config, "seed": seed} and record["training_precision"] == "float32"
        assert record["parameters"] == 7878
    text = (ROOT / "results" / "Model_3" / "float32_9711-9720" / "README.md").read_text()
    rows = seed_rows(text)
    check_timed_rows(rows, ten)

    pool = {**records_in("Model_3/float32"), **records_in("Model_3/more_seeds/float32"), **ten}
    assert len(pool) == 30
    misses = [s for s, r in ten.items() if min(r["history"]["test_acc"][-5:]) < utils.TARGET_ACC]
    assert len(misses) == 1
    miss = ten[misses[0]]["history"]["test_acc"][-5:]
    below = [i + 11 for i, a in enumerate(miss) if a < utils.TARGET_ACC]
    assert below == list(range(below[0], below[-1] + 1))
    held = sum(a >= utils.TARGET_ACC for r in ten.values() for a in r["history"]["test_acc"][-5:])
    chance = (passing(pool) / len(pool)) ** 10
    seconds = {s: r["wall_seconds"] for s, r in ten.items()}
    first, rest = [seconds[s] for s in range(9711, 9715)], [seconds[s] for s in range(9715, 9721)]
    epochs_first = [e for s in range(9711, 9715) for e in ten[s]["history"]["seconds"]]
    slow = [e for e in epochs_first if e > 24]
    quiet = [e for e in epochs_first if e <= 24]
    epochs_rest = [e for s in range(9715, 9721) for e in ten[s]["history"]["seconds"]]
    folder = " ".join(text.split())
    assert (f"**{passing(ten)} of 10 seeds hold ≥ 99.4 % in every one of epochs 11–15, at {mean_std(ten)}**"
            in folder)
    assert f"{held} of the 50 epochs are at 99.40 % or more" in folder
    assert (f"Seed {misses[0]} misses: {min(miss):.2f}–{max(miss):.2f} % in all five epochs, below the bar in epochs "
            f"{below[0]}–{below[-1]}") in folder
    assert f"held the bar on {passing(pool)} of 30 seeds at {mean_std(pool)} (n = 30)" in folder
    assert f"rate seen, {passing(pool)} of 30, ten of ten pass with probability about {chance:.2f}" in folder
    assert (f"took {min(seconds.values()):.0f}–{max(seconds.values()):.0f} s, over the 4-min goal" in folder
            and f"9711–9714 ({min(first):.0f}–{max(first):.0f} s)" in folder)
    assert (f"({len(slow)} of their 60 epochs took {min(slow):.1f}–{max(slow):.1f} s, the rest {min(quiet):.1f}–"
            f"{max(quiet):.1f} s)") in folder
    assert (f"(every epoch {min(epochs_rest):.1f}–{max(epochs_rest):.1f} s), in {min(rest):.0f}–{max(rest):.0f} s"
            in folder)

    nine, thirty = f"{passing(ten)} of 10", f"{passing(pool)} of 30"
    low = f"{min(miss):.2f}–{max(miss):.2f} %"
    head = " ".join(README.split("## Contents", 1)[0].split())
    assert f"held it on {nine} ({misses[0]} sits at {low}, below the bar in epochs {below[0]}–{below[-1]}): in float32, **{thirty} seeds at {mean_std(pool)}**" in head
    in_short = f"in float32 ({thirty} in float32 with ten further seeds), so most runs"
    assert in_short in " ".join(section_text("### Step 3").split()) and in_short in step3_markdown()
    fresh_seeds = " ".join(section_text("## Fresh seeds").split())
    assert (f"**{nine} seeds passing at {mean_std(ten)}**, {held} of the 50 epochs at 99.40 % or more; "
            f"{misses[0]} misses, at {low} in all five epochs (below the bar in epochs {below[0]}–{below[-1]})"
            ) in fresh_seeds
    assert f"float32 held the bar on {thirty} seeds at {mean_std(pool)} (n = 30)**" in fresh_seeds
    assert f"ten of ten pass with probability about {chance:.2f}" in fresh_seeds
    assert f"{min(seconds.values()):.0f}–{max(seconds.values()):.0f} s per run in float32" in fresh_seeds
    runs_v33 = [*runs(3).values(), *records_in("Model_3/more_seeds").values(), records_in("Model_3/rerun")[9831],
                *pool.values(), json.loads((ROOT / "results" / "step3_notebook.json").read_text())]
    assert {r["parameters"] for r in runs_v33} == {7878}
    held_runs = sum(min(r["history"]["test_acc"][-5:]) >= utils.TARGET_ACC for r in runs_v33)
    assert (f"the rerun of 9831, its three float32 checks and its notebook run) {held_runs} of {len(runs_v33)} hold "
            "the target") in fresh_seeds
    speed = section_text("## Speed")
    lo, hi = min(seconds.values()), max(seconds.values())
    assert (f"ten further seeds 9711–9720 (a later session's check; 9711–9714 at times beside short test runs) | "
            f"{lo / 60:.1f}–{hi / 60:.1f} min ({lo:.0f}–{hi:.0f} s) |") in speed
    running = " ".join(section_text("## Running it").split())
    assert f"on {passing(ten)} of ten further seeds, {thirty} in float32 at {mean_std(pool)}" in running
    notebook = step3_markdown()
    assert f"held it on {nine}: **{thirty}** in float32, at {mean_std(pool)}" in notebook
    docstring = " ".join(model.Model_3.__doc__.split())
    assert f"{nine}), {thirty} at {mean_std(pool).replace('±', '+-')}" in docstring
    index = " ".join((ROOT / "results" / "Model_3" / "README.md").read_text().split())
    assert (f"{nine} hold the target ({misses[0]} misses), {mean_std(ten)}; with the twenty above, {thirty} at "
            f"{mean_std(pool)}") in index


def test_step3_in_short_quotes_the_runs():
    """The "In short" paragraph that opens step 3 in the README and in its notebook: the parameters, step 2's and
    the fresh seeds' levels, and the twenty seeds' pass counts in each precision, as the JSON files give them."""
    fresh, more = runs(3), records_in("Model_3/more_seeds")
    f32 = {**records_in("Model_3/float32"), **records_in("Model_3/more_seeds/float32")}
    expected = (f"first conv ({utils.count_parameters(model.Model_3()):,} in all). The test level rises from step 2's "
                f"{mean_std(runs(2))} to {mean_std(fresh)} on ten fresh seeds, all ten holding the bar; on twenty "
                f"seeds the bar held on {passing({**fresh, **more})} in bf16 and {passing(f32)} in float32")
    assert passing(fresh) == 10
    assert expected in " ".join(section_text("### Step 3").split())
    assert expected in step3_markdown()


def test_speed_table_quotes_design_v33s_later_run_times():
    """Speed's rows for the runs of today's Model_3 after its fresh runs: seed 9831 again, the ten more seeds and
    step 3's notebook run."""
    speed = section_text("## Speed")
    rerun = records_in("Model_3/rerun")[9831]["wall_seconds"]
    assert f"| {rerun / 60:.1f} min ({rerun:.0f} s) |" in speed
    more = [r["wall_seconds"] for r in records_in("Model_3/more_seeds").values()]
    assert (f"ten more seeds 9841–9850 | {min(more) / 60:.1f}–{max(more) / 60:.1f} min ({min(more):.0f}–"
            f"{max(more):.0f} s) |") in speed
    notebook = json.loads((ROOT / "results" / "step3_notebook.json").read_text())["wall_seconds"]
    assert f"design v33, step 3's notebook run (seed 1, alone on the CPU) | {notebook / 60:.1f} min ({notebook:.0f} s) |" in speed
    f32 = [r["wall_seconds"] for r in records_in("Model_3/float32").values()]
    assert (f"four minutes of test runs) | {min(f32) / 60:.1f}–{max(f32) / 60:.1f} min ({min(f32):.0f}–{max(f32):.0f} "
            "s) |") in speed


def test_the_final_model_section_quotes_its_run_and_the_weights_score():
    """The final model is seed 9831's run, declared in design v33's plan; the section quotes its last five epochs and
    the accuracy of its weights, which is the last epoch's (tests/test_weights.py re-scores them)."""
    record = json.loads((ROOT / "results" / "Model_3" / "Model_3_seed9831.json").read_text())
    plan = " ".join((ROOT / "results" / "validation" / "v33" / "PLAN.md").read_text().split())
    assert "9831" in plan and "final model" in plan
    text = " ".join(section_text("## The final model").split())
    acc = record["history"]["test_acc"]
    assert f"Its last five epochs are {', '.join(f'{a:.2f}' for a in acc[-5:-1])} and {acc[-1]:.2f} %" in text
    assert f"score **{acc[-1]:.2f} %** ({round(acc[-1] * 100):,} of 10,000)" in text


def test_where_the_search_stops_quotes_the_runs_it_reasons_from():
    """Where the search stops (and step 3's notebook, in short): design v33's level on its twenty bf16 test seeds,
    the gain the mean goal needs, the spread of design v33 minus design v17 seed by seed and the paired seeds that
    spread asks for (two standard errors; and four times in five for a real +0.03), the validation gains against
    their test checks, and the closest candidate not adopted, each computed here from the committed runs."""
    text = " ".join(section_text("## Where the search stops").split())
    v33 = {**runs(3), **records_in("Model_3/more_seeds")}
    v17 = {**records_in("design_v17/paired"), **records_in("design_v17/paired/more_seeds")}
    assert sorted(v33) == sorted(v17) == list(range(9831, 9851))
    fresh = statistics.mean(last5_mean(r) for r in runs(3).values())
    assert f"twenty test seeds is {mean_std(v33)} (bf16, 9831–9850; its fresh ten, {fresh:.2f} %, came within" in text
    gain = 99.52 - statistics.mean(last5_mean(r) for r in v33.values())
    assert 0.025 <= gain < 0.035 and "a real gain of about +0.03 points" in text
    sd = statistics.stdev(last5_mean(v33[s]) - last5_mean(v17[s]) for s in v33)
    n = math.ceil((sd / 0.015) ** 2)  # an estimate of +0.03 at two standard errors
    n80 = math.ceil(((2 + statistics.NormalDist().inv_cdf(0.8)) * sd / 0.03) ** 2)  # a real +0.03, 80 % of the time
    hours = n80 * statistics.mean(r["wall_seconds"] for r in v33.values()) / 3600  # two runs at a time
    assert 2.5 <= hours < 3.5 and abs(n80 - 50) <= 1
    assert (f"standard deviation of {sd:.3f}. At that spread an estimate of +0.03 reaches two standard errors at "
            f"about {n} paired seeds ({sd:.3f} / √{n} ≈ {sd / n ** 0.5:.3f}), but a real gain of +0.03 clears two "
            "standard errors four times in five only at about 50 paired seeds: about 100 runs, about three hours of "
            "this CPU running two at a time") in text
    notebook = step3_markdown()
    assert (f"level over twenty test seeds is {mean_std(v33)}, so ten new fresh seeds would reach 99.52 % with even "
            "odds only after a real gain of about +0.03; on the test set a real +0.03 clears two standard errors four "
            "times in five only at about 50 paired seeds (about 100 runs)") in notebook
    run = validation_driver()

    def validation(arm, references, stat=statistics.mean):
        deltas = [d for arm_, r in references for d in run.paired_deltas(arm_ or arm, r, stat)[1]]
        return statistics.mean(deltas), statistics.stdev(deltas) / len(deltas) ** 0.5, len(deltas)

    for what, arm, reference, test_delta in (
            ("scaling", "v12_scale0.2", "v10_reference",
             paired_delta(records_in("design_v12/Model_3"), records_in("design_v7/paired"))),
            ("the elastic distortion", "v17_elastic24", "v13_reference",
             paired_delta(records_in(V17), records_in("design_v12/paired")))):
        mean, se, k = validation(arm, [(None, reference)])
        assert f"{what} {mean:+.2f} (SE {se:.2f}, n = {k}), then {test_delta})" in text, what
        assert 2.5 <= mean / se < 3.5, what  # "cleared their rules by about three standard errors"
    mean, se, k = validation("v33_block2_18first", [(None, "v27_reference"), (None, "v28_reference")])
    test_mean, test_se = paired_delta3(v33, v17)
    assert f"the wider conv {mean:+.3f} (SE {se:.3f}, n = {k}), then {test_mean} (SE {test_se}, n = 20)" in text
    low, high = (float(test_mean) + k * 2 * float(test_se) for k in (-1, 1))
    assert low < 0 < high and low < 0.03 < high  # "within two standard errors of both zero and +0.03"
    seeds, deltas = run.paired_deltas("v34_block2_18first", "v34_reference")
    v34 = f"{statistics.mean(deltas):+.3f}, SE {statistics.stdev(deltas) / len(deltas) ** 0.5:.3f}, n = {len(seeds)}"
    mean, se, k = validation("v33_block2_18first", [(None, "v27_reference"), (None, "v28_reference"),
                                                    ("v34_block2_18first", "v34_reference")])
    assert f"(design v34: {v34}; pooled with design v33's 24, {mean:+.3f}, SE {se:.3f}, n = {k})".replace("-", "−") in text
    mean, se, k = validation(None, [("v26_silu", "v26_reference"), ("v31_silu", "v27_reference"),
                                    ("v31_silu", "v28_reference")])
    assert f"SiLU came closest, {mean:+.3f} (SE {se:.3f}, n = {k}) on the mean over designs v26 and v31" in text
    assert mean / se < 2
