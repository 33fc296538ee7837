"""Every committed weights file reproduces the accuracy its JSON records, through the project's evaluation path.

Training evaluated each epoch with ``utils.evaluate`` on the device pipeline's test loader, on the CPU, in the
``channels_last`` layout; so does this test, so the accuracy must be *equal*, not close. (On the CPU the result
does not depend on the thread count: checked bitwise for 1 and 2 threads. A run trained on a GPU would have to be
compared with a tolerance; none is committed.)
"""
from __future__ import annotations

import functools
import json
import subprocess

import pytest
import torch

import model
import utils
from conftest import ROOT, load_script

RESULTS = ROOT / "results"
FINAL = RESULTS / "Model_3" / "Model_3_seed9831.pt"  # declared in results/validation/v33/PLAN.md before the runs
# today's runs (design v33's Model_3 and the earlier steps), and designs v2's to v17's (superseded, still quoted;
# v3's with the pipeline check's conventional runs): their Model_3 had Model_2's layers, which the validation
# driver's design_v4_model builds (dropout holds no parameters; design v5 changed only the training arithmetic,
# design v7 which weights a run scores and keeps: their moving average, designs v12 and v17 the training images:
# random scaling, then elastic distortion)
QUOTED = ["Model_[123]/Model_[123]_seed*", "step[123]_notebook",
          "design_v2/Model_3/Model_3_seed*", "design_v2/step3_notebook",
          "design_v3/Model_3/Model_3_seed*", "design_v3/Model_3/conventional/Model_3_seed*", "design_v3/step3_notebook",
          "design_v4/Model_3/Model_3_seed*", "design_v4/step3_notebook",
          "design_v5/Model_3/Model_3_seed*", "design_v5/step3_notebook",
          "design_v7/Model_3/Model_3_seed*", "design_v7/step3_notebook",
          "design_v7/paired/Model_3_seed*",  # the paired check's: flips.py scores them image by image
          "design_v12/Model_3/Model_3_seed*", "design_v12/step3_notebook",
          "design_v17/Model_3/Model_3_seed*", "design_v17/step3_notebook"]
WEIGHTS = sorted(p for pattern in QUOTED for p in RESULTS.glob(pattern + ".pt"))


def record_of(weights):
    return json.loads(weights.with_suffix(".json").read_text())


@functools.cache
def validation_driver():
    """``results/validation/run.py``, loaded once: its ``design_v4_model`` is the Model_3 of designs v4 to v17."""
    return load_script("results/validation/run.py", "validation_run")


def model_for(weights, record) -> torch.nn.Module:
    """A fresh model of the architecture ``weights`` were trained as: an earlier design's Model_3 had Model_2's
    layers."""
    if record["model"] == "Model_3" and any(p.name.startswith("design_v") for p in weights.parents):
        return validation_driver().design_v4_model()
    return getattr(model, record["model"])()


def test_every_quoted_run_has_its_weights_and_only_those_are_committed():
    runs = [p for pattern in QUOTED for p in RESULTS.glob(pattern + ".json")]
    assert len(runs) == 3 + 3 + 10 + 3 + 10 + 1 + 10 + 4 + 1 + 10 + 1 + 10 + 1 + 10 + 1 + 10 + 10 + 1 + 10 + 1
    assert FINAL in WEIGHTS
    assert sorted(run.with_suffix(".pt") for run in runs) == WEIGHTS
    listed = subprocess.run(["git", "ls-files", "results/*.pt"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode == 0:  # a git checkout: no other weights are committed (.gitignore keeps them out)
        assert sorted(ROOT / line for line in listed.stdout.split()) == WEIGHTS
    for weights in WEIGHTS:
        assert weights.stat().st_size < 60_000, weights  # a state_dict of < 8k parameters, nothing else


@pytest.fixture(scope="module")
def test_set(real_mnist):
    return utils.eval_loader(real_mnist, "cpu", download=False)


@pytest.fixture(scope="module")
def conventional_test_set(real_mnist):
    """The test loader a ``--pipeline conventional`` run evaluated with (torchvision transforms, DataLoader)."""
    return utils.make_loaders(real_mnist, "conventional", download=False, num_workers=0)[1]


@pytest.mark.parametrize("weights", WEIGHTS, ids=lambda p: str(p.relative_to(RESULTS)))
def test_weights_reproduce_their_last_epoch_on_the_test_set(weights, request):
    record = record_of(weights)
    assert record["evaluated_on"] == "test set" and record["config"]["subset"] is None
    assert record["device"].startswith("cpu")
    pipeline = record["config"]["pipeline"]
    loader = request.getfixturevalue("conventional_test_set" if pipeline == "conventional" else "test_set")
    net = utils.to_device(utils.load_weights(model_for(weights, record), weights), torch.device("cpu"))
    assert utils.count_parameters(net) == record["parameters"]
    _, acc = utils.evaluate(net, loader, torch.device("cpu"))
    assert acc == record["history"]["test_acc"][-1]


def test_the_final_model_reaches_the_target(test_set):
    net = utils.to_device(utils.load_weights(model.Model_3(), FINAL), torch.device("cpu"))
    assert utils.evaluate(net, test_set, torch.device("cpu"))[1] >= utils.TARGET_ACC


def test_errors_json_is_what_the_fresh_runs_saved_models_give(real_mnist):
    """results/Model_3/errors.json (design v33's fresh runs) and results/design_v17/Model_3/errors.json, measured
    again from the ten fresh runs' weights and the test set."""
    errors = load_script("results/Model_3/errors.py", "errors")
    for design, (folder, _, _) in errors.DESIGNS.items():
        assert errors.measure(real_mnist, design) == json.loads((folder / "errors.json").read_text()), design


def test_flips_json_is_what_the_paired_checks_saved_models_give(real_mnist):
    """results/design_v7/paired/flips.json, measured again from the twenty weights files and the test set."""
    flips = load_script("results/design_v7/paired/flips.py", "flips")
    assert flips.measure(real_mnist) == json.loads((RESULTS / "design_v7" / "paired" / "flips.json").read_text())
