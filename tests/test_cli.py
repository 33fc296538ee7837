"""train.py: error paths (one line, exit 2, nothing written), results files, resuming a multi-seed run."""
from __future__ import annotations

import json
import re
import shlex
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bench
import model
import train
import utils
from conftest import ROOT, synthetic_digits, write_idx

SMOKE = ["--epochs", "1", "--batch-size", "100", "--no-download", "--device", "cpu"]


def run_cli(args: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize("args, words", [
    (["--model", "Model_9"], "invalid choice: 'Model_9'"),
    (["--epochs", "0"], "must be a positive number"),
    (["--epochs", "ten"], "is not a whole number"),
    (["--rotation", "left"], "is not a number"),
    (["--lr", "-0.1"], "must be a positive number"),
    (["--lr", "nan"], "must be a positive number"),
    (["--rotation", "400"], "between 0 and 180"),
    (["--translation", "3"], "between 0 and 0.5"),
    (["--translation", "-0.1"], "between 0 and 0.5"),
    (["--scale", "1"], "between 0 and 0.5 (factors"),
    (["--shear", "60"], "between 0 and 45 degrees"),
    (["--shear", "-5"], "between 0 and 45 degrees"),
    (["--elastic", "-1"], "must be >= 0 (0: no elastic"),
    (["--elastic-sigma", "0"], "at most 6.5 pixels"),
    (["--elastic-sigma", "7"], "at most 6.5 pixels"),
    (["--ema", "1"], "below 1"),
    (["--ema", "-0.5"], "below 1"),
    (["--label-smoothing", "1"], "below 1 (0: no label smoothing)"),
    (["--clean-epochs", "-1"], "must be >= 0"),
    (["--clean-epochs", "16"], "--clean-epochs 16 is more than the run's 15 epochs"),
    (["--clean-epochs", "3", "--epochs", "2"], "give at most 2"),
    (["--recalibrate-bn", "-5"], "must be >= 0"),
    (["--holdout-block", "2"], "--holdout-block needs --holdout N"),
    (["--seeds", "1", "-2"], "must be a whole number from 0 to"),
    (["--seeds", "1", str(2**32)], "must be a whole number from 0 to 4,294,967,295"),  # before seed 1 trains
    (["--evaluate", ""], "--evaluate needs the path of a weights file"),  # not a training run
    (["--seed", "1", "--seeds", "2"], "not both"),
    (["--device", "quantum"], "not usable here"),
    (["--device", "meta"], "it cannot train"),
])
def test_bad_arguments_get_one_line_and_exit_2(tmp_path, capsys, args, words):
    with pytest.raises(SystemExit) as info:
        train.main([*args, "--data-dir", str(tmp_path), "--out", str(tmp_path / "out"), "--no-download"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "out").exists()


def test_the_seed_bound_is_the_one_seeding_enforces():
    """train.py refuses a seed up front exactly where utils.set_seed (NumPy) would fail after earlier seeds ran."""
    assert train.SEED(str(2**32 - 1)) == 2**32 - 1
    utils.set_seed(2**32 - 1)
    with pytest.raises(ValueError):
        utils.set_seed(2**32)


@pytest.mark.parametrize("args, words", [
    (["--holdout", "100", "--holdout-block", "6"], "holdout_block must be -1 or in [0, 6) for 100 of 600"),
    (["--holdout", "600"], "holdout must be in [0, 600)"),
])
def test_a_holdout_that_does_not_fit_the_data_gets_one_line_before_any_run(mnist_root, tmp_path, capsys, args,
                                                                           words):
    with pytest.raises(SystemExit) as info:
        train.main([*args, "--data-dir", str(mnist_root), "--out", str(tmp_path / "out"), *SMOKE])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "out").exists()


def test_missing_data_is_one_line_without_traceback(tmp_path):
    done = run_cli(["--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "out"), "--no-download"],
                   tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "MNIST not found" in done.stderr and "--data-dir" in done.stderr
    assert not (tmp_path / "out").exists()


def test_broken_data_is_one_line_before_any_run(tmp_path, capsys):
    """Images and labels that do not match: refused before training (it used to fail mid-run, or, for the test
    split, to score the images that had labels)."""
    write_idx(tmp_path / "data", True, *synthetic_digits(600, seed=1))
    images, labels = synthetic_digits(200, seed=2)
    write_idx(tmp_path / "data", False, images, labels)
    labels_file = tmp_path / "data" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"  # whole, but of 150 labels
    labels_file.write_bytes(struct.pack(">II", 0x801, 150) + labels[:150].tobytes())
    with pytest.raises(SystemExit) as info:
        train.main(["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"), *SMOKE])
    captured = capsys.readouterr()
    assert info.value.code == 2 and captured.err.count("\n") == 1, captured.err
    assert "200 images but 150 labels" in captured.err and captured.out == ""
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_passes_a_data_folder_with_a_space_as_one_argument(tmp_path):
    """``make train DATA=...`` and ``make notebooks DATA=...`` quote the folder (dry runs: nothing is executed)."""
    folder = str(tmp_path / "my data")

    def dry_run(*args: str) -> str:
        return subprocess.run(["make", "-n", *args, f"DATA={folder}"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout

    train_line = next(line for line in dry_run("-o", ".venv/.runtime", "train").splitlines() if "train.py" in line)
    words = shlex.split(train_line)
    assert words[words.index("--data-dir") + 1] == folder
    notebooks = dry_run("-o", ".venv/.dev", "notebooks", "STEPS=1")
    papermill = next(line for line in notebooks.splitlines() if "-p DATA_DIR" in line)
    words = shlex.split(papermill.rstrip("\\"))
    assert words[words.index("DATA_DIR") + 1] == folder


def test_writes_results_and_weights_then_resumes(mnist_root, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--model", "Model_1", "--seeds", "1", "2", "--data-dir", str(mnist_root), "--out", str(out), *SMOKE]
    assert train.main(args) == 0
    first = capsys.readouterr().out
    assert "epoch  1/1 |" in first and "mean" in first.splitlines()[-1]
    record = json.loads((out / "Model_1_seed1.json").read_text())
    assert record["parameters"] == 4018 and record["config"]["seed"] == 1
    assert len(record["history"]["test_acc"]) == 1 and record["evaluated_on"] == "test set"
    assert {"torch", "torchvision", "python"} <= set(record["versions"])
    net = model.Model_1()
    net.load_state_dict(torch.load(out / "Model_1_seed1.pt", weights_only=True))
    assert sorted(p.name for p in out.iterdir()) == ["Model_1_seed1.json", "Model_1_seed1.pt",
                                                     "Model_1_seed2.json", "Model_1_seed2.pt"]

    # a run killed during seed 2 left no JSON for it: only seed 2 is trained again
    (out / "Model_1_seed2.json").unlink()
    seed1 = (out / "Model_1_seed1.json").read_text()
    assert train.main(args) == 0
    again = capsys.readouterr().out
    assert "seed 1: already done" in again and "== Model_1, seed 2 ==" in again
    assert "== Model_1, seed 1 ==" not in again
    assert (out / "Model_1_seed1.json").read_text() == seed1 and (out / "Model_1_seed2.json").exists()


def test_refuses_to_overwrite_a_run_with_other_settings(mnist_root, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--model", "Model_1", "--data-dir", str(mnist_root), "--out", str(out), *SMOKE]
    assert train.main(base) == 0
    before = (out / "Model_1_seed1.json").read_text()
    with pytest.raises(SystemExit) as info:
        train.main([*base, "--lr", "0.5"])
    assert info.value.code == 2 and "other settings" in capsys.readouterr().err
    assert (out / "Model_1_seed1.json").read_text() == before


def finished_then_edited(mnist_root, tmp_path, edit) -> tuple[list[str], Path, dict]:
    """A finished smoke run of Model_1 seed 1 whose JSON record ``edit`` then changes in place."""
    base = ["--model", "Model_1", "--data-dir", str(mnist_root), "--out", str(tmp_path / "out"), *SMOKE]
    assert train.main(base) == 0
    path = tmp_path / "out" / "Model_1_seed1.json"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    return base, path, record


def test_a_run_saved_before_a_config_field_existed_still_counts_as_done(mnist_root, tmp_path, capsys):
    """A JSON written before ``Config.ema`` existed has no ``ema`` key: it ran without one, which is the default."""
    base, _, _ = finished_then_edited(mnist_root, tmp_path, lambda record: record["config"].pop("ema"))
    capsys.readouterr()
    assert train.main(base) == 0 and "seed 1: already done" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        train.main([*base, "--ema", "0.9"])  # the same run with a moving average is another experiment
    assert info.value.code == 2 and "other settings" in capsys.readouterr().err


def test_a_result_of_an_earlier_architecture_is_not_taken_for_a_finished_seed(mnist_root, tmp_path, capsys):
    def earlier_architecture(record: dict) -> None:
        record["parameters"] += 1  # as if Model_1 had been changed since this run

    base, path, record = finished_then_edited(mnist_root, tmp_path, earlier_architecture)
    with pytest.raises(SystemExit) as info:
        train.main(base)
    assert info.value.code == 2 and "another Model_1" in capsys.readouterr().err
    assert json.loads(path.read_text()) == record


@pytest.mark.parametrize("edit, words", [
    (lambda r: r["summary"].update(best=None), "no summary of seed 1's epochs"),
    (lambda r: r["summary"].update(mean_last5="99.5"), "no summary of seed 1's epochs"),
    (lambda r: r.pop("seed"), "no summary of seed 1's epochs"),
    (lambda r: r.update(seed=2), "no summary of seed 1's epochs"),
    (lambda r: r.update(device="cuda (NVIDIA H200)"), "holds a run on cuda (NVIDIA H200) in float32; this one would"),
    (lambda r: r.update(training_precision="bfloat16 autocast"), "in bfloat16 autocast; this one would train on cpu"),
])
def test_a_finished_seed_is_checked_before_the_other_seeds_train(mnist_root, tmp_path, capsys, edit, words):
    """A results file the final table cannot read, or a run on another device or precision (another run, which
    the table must not average with these), is refused before seed 2 trains, not after it."""
    base, path, record = finished_then_edited(mnist_root, tmp_path, edit)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        train.main([*base[:2], "--seeds", "1", "2", *base[2:]])
    captured = capsys.readouterr()
    assert info.value.code == 2 and captured.err.count("\n") == 1 and words in captured.err, captured.err
    assert "seed 2" not in captured.out and not (tmp_path / "out" / "Model_1_seed2.json").exists()
    assert json.loads(path.read_text()) == record


def test_a_broken_results_file_is_reported_not_overwritten(mnist_root, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "Model_1_seed1.json").write_text("{half a fi")
    with pytest.raises(SystemExit) as info:
        train.main(["--model", "Model_1", "--data-dir", str(mnist_root), "--out", str(out), *SMOKE])
    assert info.value.code == 2 and "invalid JSON" in capsys.readouterr().err
    assert (out / "Model_1_seed1.json").read_text() == "{half a fi"


def test_a_folder_where_a_results_file_would_be_is_reported_before_any_run(mnist_root, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "Model_1_seed1.json").mkdir(parents=True)
    with pytest.raises(SystemExit) as info:
        train.main(["--model", "Model_1", "--data-dir", str(mnist_root), "--out", str(out), *SMOKE])
    captured = capsys.readouterr()
    assert info.value.code == 2 and captured.err.count("\n") == 1 and "cannot be read" in captured.err, captured.err
    assert "epoch" not in captured.out and sorted(p.name for p in out.iterdir()) == ["Model_1_seed1.json"]


def test_a_results_file_without_a_summary_is_not_taken_for_a_finished_seed(mnist_root, tmp_path, capsys):
    """Its config and parameter count match, but the table at the end reads the summary: refused before any run."""
    base, path, record = finished_then_edited(mnist_root, tmp_path, lambda record: record.pop("summary"))
    with pytest.raises(SystemExit) as info:
        train.main([*base, "--seeds", "2", "1"])
    captured = capsys.readouterr()
    assert info.value.code == 2 and captured.err.count("\n") == 1 and "no summary" in captured.err, captured.err
    assert json.loads(path.read_text()) == record and not (path.parent / "Model_1_seed2.json").exists()


@pytest.mark.parametrize("content", ["[]", "3"])
def test_a_results_file_that_is_not_a_json_object_is_reported_not_overwritten(mnist_root, tmp_path, capsys, content):
    out = tmp_path / "out"
    out.mkdir()
    (out / "Model_1_seed1.json").write_text(content)
    with pytest.raises(SystemExit) as info:
        train.main(["--model", "Model_1", "--data-dir", str(mnist_root), "--out", str(out), *SMOKE])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "not a JSON object" in err, err
    assert (out / "Model_1_seed1.json").read_text() == content


@pytest.mark.parametrize("below", [False, True])
def test_an_out_that_is_a_file_gets_one_line_before_any_run(mnist_root, tmp_path, capsys, below):
    """--out naming a file, or a folder under one, would fail only when the first seed's results are saved."""
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    out = blocker / "runs" if below else blocker
    with pytest.raises(SystemExit) as info:
        train.main(["--model", "Model_1", "--data-dir", str(mnist_root), "--out", str(out), *SMOKE])
    captured = capsys.readouterr()
    assert info.value.code == 2 and captured.err.count("\n") == 1 and "is a file, not a folder" in captured.err
    assert "epoch" not in captured.out and blocker.read_text() == "not a folder"


def test_results_table_reports_each_seed_and_the_spread():
    payloads = [{"seed": s, "summary": {"best": b, "last": b, "min_last5": b - 0.1, "mean_last5": b - 0.05,
                                        "first_at_target": 9}} for s, b in ((1, 99.5), (2, 99.7))]
    lines = train.results_table(payloads).splitlines()
    assert len(lines) == 4 and lines[1].split()[:2] == ["1", "99.50"]
    assert lines[-1].split()[:2] == ["mean", "99.60±0.14"]
    ends = [m.end() for m in re.finditer(r"\S+", lines[0].replace("min last5", "min_last5").replace("mean last5",
                                                                                                  "mean_last5"))]
    assert [m.end() for m in re.finditer(r"\S+", lines[-1])] == ends[:5]  # the mean row's columns line up


@pytest.fixture(scope="module")
def smoke_weights(mnist_root, tmp_path_factory):
    """One 1-epoch Model_1 run on the synthetic MNIST files: its JSON and its weights."""
    out = tmp_path_factory.mktemp("weights")
    assert train.main(["--model", "Model_1", "--data-dir", str(mnist_root), "--out", str(out), *SMOKE]) == 0
    return json.loads((out / "Model_1_seed1.json").read_text()), out / "Model_1_seed1.pt"


def test_evaluate_reproduces_the_runs_last_test_accuracy_with_confusion_counts(mnist_root, smoke_weights, capsys):
    record, weights = smoke_weights
    capsys.readouterr()
    assert train.main(["--evaluate", str(weights), "--data-dir", str(mnist_root), "--no-download",
                       "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "Model_1, 4,018 parameters" in out  # found without --model
    assert f"test accuracy {record['history']['test_acc'][-1]:.2f} %" in out
    assert "errors per true class:" in out and "confusion matrix" in out
    matrix = [line.split()[1:] for line in out.splitlines()[-10:]]
    assert sum(int(v) for row in matrix for v in row) == 200  # every synthetic test image, once


@pytest.mark.parametrize("case, words", [
    ("missing", "no such file"),
    ("text", "is not a state_dict saved with torch.save"),
    ("list", "holds a list, not a state_dict"),
    ("other model", "does not hold Model_3 weights (it fits Model_1)"),
    ("foreign", "it fits none of Model_1, Model_2, Model_3"),
    ("int keys", "it fits none of Model_1, Model_2, Model_3"),
])
def test_evaluate_refuses_bad_weights_in_one_line(mnist_root, smoke_weights, tmp_path, case, words):
    path, extra = tmp_path / "w.pt", []
    if case == "text":
        path.write_text("not weights")
    elif case == "list":
        torch.save([torch.zeros(2)], path)
    elif case == "other model":
        path, extra = smoke_weights[1], ["--model", "Model_3"]
    elif case == "foreign":
        torch.save({"fc.weight": torch.zeros(10, 784)}, path)
    elif case == "int keys":
        torch.save({1: torch.zeros(2)}, path)
    done = run_cli(["--evaluate", str(path), *extra, "--data-dir", str(mnist_root), "--no-download",
                    "--device", "cpu"], tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
    assert done.stdout == ""


def test_evaluate_names_the_model_the_weights_fit_and_an_earlier_designs_model_by_its_json(
        mnist_root, tmp_path, capsys):
    """The three models' weights differ in shape, so at most one fits. Design v17's Model_3 (and every design's
    before v33) had Model_2's layers: its weights fit Model_2, and the JSON beside them, which names Model_3, is
    quoted."""
    shapes = [{k: v.shape for k, v in getattr(model, f"Model_{n}")().state_dict().items()} for n in (1, 2, 3)]
    assert shapes[0] != shapes[1] != shapes[2] != shapes[0]
    weights = tmp_path / "Model_3_seed1.pt"
    torch.save(model.Model_3().state_dict(), weights)
    args = ["--evaluate", str(weights), "--data-dir", str(mnist_root), "--no-download", "--device", "cpu"]
    assert train.main(args) == 0
    assert ": Model_3, 7,878 parameters" in capsys.readouterr().out
    torch.save(model.Model_2().state_dict(), weights)
    assert train.main(args) == 0
    assert ": Model_2, 7,442 parameters" in capsys.readouterr().out
    (tmp_path / "Model_3_seed1.json").write_text(json.dumps({"model": "Model_3"}))
    assert train.main(args) == 0
    assert (": Model_2 (its JSON names Model_3: an earlier design's Model_3, with Model_2's layers), 7,442 "
            "parameters") in capsys.readouterr().out


def test_recipe_overrides_reach_the_run_record(mnist_root, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--model", "Model_3", "--translation", "0.1", "--rotation", "5", "--scale", "0.2", "--elastic", "24",
            "--elastic-sigma", "3", "--shear", "10", "--data-dir", str(mnist_root), "--out", str(out), *SMOKE]
    assert train.main(args) == 0
    record = json.loads((out / "Model_3_seed1.json").read_text())
    config = record["config"]
    assert config["translation"] == 0.1 and config["rotation"] == 5.0 and config["batch_size"] == 100
    assert config["scale"] == 0.2 and config["elastic"] == 24.0 and config["elastic_sigma"] == 3.0
    assert config["shear"] == 10.0
    assert config["ema"] == utils.RECIPES["Model_3"].ema  # the recipe's
    assert config["bf16"] is True  # the recipe's; the precision it gives depends on this CPU
    assert record["training_precision"] == utils.precision_name(utils.training_dtype(utils.recipe("Model_3"), "cpu"))
    assert train.main([*args[:-len(SMOKE)], "--out", str(tmp_path / "fp32"), "--no-bf16", *SMOKE]) == 0
    record = json.loads((tmp_path / "fp32" / "Model_3_seed1.json").read_text())
    assert record["config"]["bf16"] is False and record["training_precision"] == "float32"
    assert train.main([*args[:-len(SMOKE)], "--out", str(tmp_path / "ema"), "--ema", "0.99", *SMOKE]) == 0
    assert json.loads((tmp_path / "ema" / "Model_3_seed1.json").read_text())["config"]["ema"] == 0.99
    more = ["--label-smoothing", "0.1", "--holdout", "100", "--holdout-block", "2"]
    assert train.main([*args[:-len(SMOKE)], "--out", str(tmp_path / "ls"), *more, *SMOKE]) == 0
    record = json.loads((tmp_path / "ls" / "Model_3_seed1.json").read_text())
    assert record["config"]["label_smoothing"] == 0.1 and record["config"]["holdout_block"] == 2
    assert record["evaluated_on"] == "training images 200-299"
    assert train.main([*args[:-len(SMOKE)], "--out", str(tmp_path / "clean"), "--clean-epochs", "1", *SMOKE]) == 0
    assert json.loads((tmp_path / "clean" / "Model_3_seed1.json").read_text())["config"]["clean_epochs"] == 1
    assert train.main([*args[:-len(SMOKE)], "--out", str(tmp_path / "bn"), "--recalibrate-bn", "50", *SMOKE]) == 0
    record = json.loads((tmp_path / "bn" / "Model_3_seed1.json").read_text())
    assert record["config"]["recalibrate_bn"] == 50
    assert len(record["history"]["uncalibrated_test_acc"]) == len(record["history"]["test_acc"])


@pytest.mark.parametrize("parser", [train.build_parser, bench.build_parser])
def test_help_shows_a_default_only_where_there_is_one(parser):
    """Options whose default is the recipe's have ``None`` as their argparse default and say so in their own help;
    ``--help`` must not add "(default: None)" after that, and still gives the defaults that are values."""
    text = " ".join(parser().format_help().split())
    assert "default: None" not in text
    assert "(default: data)" in text
