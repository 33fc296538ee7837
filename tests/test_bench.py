"""bench.py in a tiny configuration: it runs both pipelines, reports and writes its JSON (no timing asserted)."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import bench
import model
import utils


def test_conv_macs_counts_every_layer():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.Flatten(), nn.Linear(2 * 26 * 26, 10))
    assert bench.conv_macs(net) == 26 * 26 * 4 * 9 + 26 * 26 * 2 * 4 + 2 * 26 * 26 * 10
    first_conv = 26 * 26 * 8 * 9
    assert bench.conv_macs(model.Model_1()) > first_conv


@pytest.mark.parametrize("name", ["Model_1", "Model_3"])
def test_bench_smoke(name, mnist_root, tmp_path, capsys):
    assert bench.main(["--epochs", "1", "--model", name, "--data-dir", str(mnist_root), "--no-download",
                       "--device", "cpu", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "faster per training epoch" in out and "arithmetic floor" in out
    record = json.loads((tmp_path / "bench_cpu.json").read_text())
    # design v3's dropout and the recipe without its elastic distortion: for Model_3 only
    extra = {bench.BLOCK1_DROPOUT, bench.NO_ELASTIC} if name == "Model_3" else set()
    recipe_dtype = utils.training_dtype(utils.RECIPES[name], torch.device("cpu"))
    other = torch.float32 if recipe_dtype == torch.bfloat16 else torch.bfloat16
    if utils.cpu_has_native_bf16():  # the recipe's other precision, timed only where bf16 is native
        extra.add(bench.precision_label(other))
    assert set(record["pipelines"]) == {"device", "conventional", "device, NCHW"} | extra
    assert ("no dropout in block 1 makes" in out) == (name == "Model_3")
    assert ("the elastic distortion makes" in out) == (utils.RECIPES[name].elastic > 0) == (name == "Model_3")
    assert ("bf16 autocast makes" in out) == utils.cpu_has_native_bf16()
    assert record["training_precision"] == utils.precision_name(recipe_dtype)
    assert record["cpu_native_bf16"] is utils.cpu_has_native_bf16()
    assert "one 15-epoch run" in out and record["full_run_seconds"] > 0
    for r in record["pipelines"].values():
        assert len(r["epoch_seconds"]) == 1 and r["images_per_second"] > 0
    assert record["speedup"] == pytest.approx(record["pipelines"]["conventional"]["median_epoch_seconds"]
                                              / record["pipelines"]["device"]["median_epoch_seconds"])
    assert record["floor_epoch_seconds"] > 0


def test_bench_rejects_bad_input_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:  # no data in tmp_path: the line must be the --workers one
        bench.main(["--workers", "-1", "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path), "--no-download"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "--workers: '-1' must be >= 0" in err, err


@pytest.mark.parametrize("below", [False, True])
def test_bench_refuses_an_out_that_is_a_file_before_timing_anything(tmp_path, capsys, below):
    """The JSON is written last: a bad --out must be refused before the minutes of timing, not after them."""
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as info:  # no data in tmp_path: only a check made first can give this line
        bench.main(["--out", str(blocker / "bench" if below else blocker), "--data-dir", str(tmp_path),
                    "--no-download", "--device", "cpu"])
    captured = capsys.readouterr()
    assert info.value.code == 2 and captured.err.count("\n") == 1 and "is a file, not a folder" in captured.err
    assert captured.out == "" and blocker.read_text() == "not a folder"


def test_matmul_rate_is_measured():
    assert bench.matmul_macs_per_second(torch.device("cpu"), n=256, repeats=1) > 1e6


def test_block1_dropout_variant_is_model_3_with_dropout_in_block_1_too():
    """The variant differs from Model_3 only in the dropout after block 1's convs: the same parameters, so its
    epoch time is what that dropout costs."""
    variant, final = bench.with_block1_dropout(), model.Model_3()
    assert {k: v.shape for k, v in variant.state_dict().items()} == {k: v.shape for k, v in final.state_dict().items()}
    dropouts = [name for name, m in variant.named_modules() if isinstance(m, nn.Dropout)]
    assert [n for n in dropouts if n.startswith("block1")] == ["block1.0.3", "block1.1.3"]
    assert [n for n in dropouts if not n.startswith("block1")] == [
        name for name, m in final.named_modules() if isinstance(m, nn.Dropout)]
