"""Speed of the input pipelines, memory layouts and training precisions, side by side in one run, against the
arithmetic floor.

    python bench.py --model Model_3 --epochs 3 --data-dir data

Trains the same model with its recipe at a constant LR (so that no epoch's timing depends on where a schedule is)
through both pipelines, alternating epoch by epoch (device, conventional, ..., device, ...) so that any drift of the
machine's load is spread over all variants, and times the training epoch and the evaluation separately. On a CPU a
third variant, the device pipeline in PyTorch's default NCHW layout instead of ``channels_last``, measures what the
layout buys; for Model_3 a fourth, Model_3 with dropout in block 1 too, as design v3 had it (the same parameters), on
the device pipeline, what leaving block 1 without dropout buys. On a CPU with native bf16 one more variant trains the
device pipeline in the other precision (float32 when the recipe trains under bf16 autocast, bf16 when it does not;
``utils.training_dtype``), to measure what bf16 buys. When the recipe distorts its images elastically
(``Config.elastic``), one more variant trains the device pipeline without the distortion, to measure what drawing
and applying the fields costs. A recipe's moving average of the weights (``Config.ema``) is not part of the timed
epochs: it costs an update of the averaged copy per step (about 3.6 % of a run on the development CPU,
``results/validation/v7/``). The report ends with what one full run of the device pipeline takes (the recipe's
epochs x the median epoch and evaluation). The floor is what the model's arithmetic alone would cost in float32:
forward+backward multiply-adds per image (3x the forward ones) x 60,000 / the multiply-adds per second this device
reaches on a large float32 matrix product (there is no bf16 floor). Results go to ``<out>/bench_<device>.json``
(written atomically), with whether a CPU has native bf16 (``cpu_native_bf16``), which decides the precision
variants.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn

import model as models
import train
import utils


BLOCK1_DROPOUT = "device, v3 dropout"  # the variant with design v3's dropout in block 1
PRECISION = "device, {}"  # the variant trained in the precision the recipe does not use: "float32" or "bf16"
NO_ELASTIC = "device, no elastic"  # the variant without the recipe's elastic distortion


def with_block1_dropout() -> nn.Module:
    """Model_3 with dropout after block 1's convs too, at Model_3's own rate, where design v3 had it: the same
    parameters (built from Model_3, so the two cannot drift apart)."""
    net = models.Model_3()
    rate = next(m.p for m in net.modules() if isinstance(m, nn.Dropout))
    for block in net.block1:  # conv -> BN -> ReLU, and now dropout, as conv_block builds it with a rate
        block.append(nn.Dropout(rate))
    return net


def conv_macs(net: nn.Module, input_size: tuple[int, int, int] = (1, 28, 28)) -> int:
    """Multiply-adds of one forward pass of one image through every Conv2d and Linear layer."""
    total = 0

    def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += output[0].numel() * k
        else:
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = net.training
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, *input_size, device=next(net.parameters()).device))
    net.train(was_training)
    for h in handles:
        h.remove()
    return total


def matmul_macs_per_second(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """Multiply-adds per second of an ``n x n`` float32 matrix product on ``device`` (best of ``repeats``)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return n ** 3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple[float, object]:
    _sync(device)
    start = time.perf_counter()
    value = fn()
    _sync(device)
    return time.perf_counter() - start, value


def precision_label(dtype: torch.dtype) -> str:
    """The name of the variant that trains the device pipeline in ``dtype``."""
    return PRECISION.format("bf16" if dtype == torch.bfloat16 else "float32")


def build_parser() -> argparse.ArgumentParser:
    p = train.Parser(description="Time the device-resident and the conventional pipeline side by side.")
    p.add_argument("--model", default="Model_3", choices=train.MODELS, help="architecture from model.py")
    p.add_argument("--epochs", type=train.positive(int), default=3, help="timed epochs per pipeline")
    p.add_argument("--batch-size", type=train.positive(int), help="training batch size (default: the recipe's)")
    p.add_argument("--workers", type=train.COUNT, help="DataLoader workers for the conventional pipeline "
                                               "(default: 2 on CUDA, 0 on CPU)")
    p.add_argument("--subset", type=train.positive(int), help="only the first N images (smoke runs)")
    p.add_argument("--device", help="cuda, mps or cpu (default: best available)")
    p.add_argument("--data-dir", default="data", help="folder holding MNIST/raw (downloaded there if missing)")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    p.add_argument("--out", default="results", help="folder for bench_<device>.json")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = train.writable_folder(parser, args.out)  # checked before the benchmark, not after it
    device = train.usable_device(parser, args.device)
    train.require_data(parser, args.data_dir, not args.no_download)
    # a constant LR: the timing must not depend on where a schedule happens to be
    cfg = utils.recipe(args.model, schedule="constant", **({"batch_size": args.batch_size} if args.batch_size else {}))
    dtype = utils.training_dtype(cfg, device)
    print(cfg, f"\ndevice: {utils.device_name(device)} | training in {utils.precision_name(dtype)}")

    # the project's layout (utils.to_device: channels_last on a CPU) for both pipelines, and on a CPU the
    # device pipeline once more in the default layout, to measure what channels_last buys
    build = getattr(models, args.model)
    # label -> (pipeline, project layout, model factory, training dtype, elastic alpha)
    elastic = cfg.elastic
    variants = {"device": ("device", True, build, dtype, elastic),
                "conventional": ("conventional", True, build, dtype, elastic)}
    if device.type == "cpu":
        variants["device, NCHW"] = ("device", False, build, dtype, elastic)
    if args.model == "Model_3":
        variants[BLOCK1_DROPOUT] = ("device", True, with_block1_dropout, dtype, elastic)
    other = torch.float32 if dtype == torch.bfloat16 else torch.bfloat16
    if device.type == "cpu" and utils.cpu_has_native_bf16():
        variants[precision_label(other)] = ("device", True, build, other, elastic)
    if elastic > 0:
        variants[NO_ELASTIC] = ("device", True, build, dtype, 0.0)
    runs = {}
    for label, (pipeline, project_layout, build, variant_dtype, variant_elastic) in variants.items():
        utils.set_seed(cfg.seed)
        net = build()
        net = utils.to_device(net, device) if project_layout else net.to(device)
        train_loader, test_loader = utils.make_loaders(
            args.data_dir, pipeline, cfg.batch_size, cfg.rotation, cfg.seed, device, not args.no_download,
            args.subset, num_workers=args.workers, translation=cfg.translation, scale=cfg.scale,
            elastic=variant_elastic, elastic_sigma=cfg.elastic_sigma, shear=cfg.shear)
        optimizer, _ = utils.make_optimizer(net, cfg, len(train_loader))
        runs[label] = dict(net=net, train=train_loader, test=test_loader, opt=optimizer, epoch=[], eval=[],
                           acc=[], images=len(train_loader.dataset), dtype=variant_dtype)
    for epoch in range(1, args.epochs + 1):
        for pipeline, r in runs.items():
            seconds, _ = timed(lambda: utils.train_epoch(r["net"], r["train"], r["opt"], device, epoch=epoch,
                                                         dtype=r["dtype"]), device)
            eval_seconds, (_, acc) = timed(lambda: utils.evaluate(r["net"], r["test"], device), device)
            r["epoch"].append(seconds)
            r["eval"].append(eval_seconds)
            r["acc"].append(acc)
            print(f"epoch {epoch} | {pipeline:>18} | train {seconds:6.2f}s | eval {eval_seconds:5.2f}s | "
                  f"test acc {acc:6.2f}%", flush=True)

    macs = 3 * conv_macs(runs["device"]["net"])
    rate = matmul_macs_per_second(device)
    floor = macs * runs["device"]["images"] / rate
    report = {}
    for pipeline, r in runs.items():
        median = statistics.median(r["epoch"])
        report[pipeline] = {"epoch_seconds": r["epoch"], "median_epoch_seconds": median,
                            "spread_seconds": [min(r["epoch"]), max(r["epoch"])],
                            "images_per_second": r["images"] / median,
                            "median_eval_seconds": statistics.median(r["eval"]), "test_acc": r["acc"]}
    ratio = report["conventional"]["median_epoch_seconds"] / report["device"]["median_epoch_seconds"]
    print(f"\n{'variant':>18} {'median s/epoch':>15} {'min-max':>13} {'images/s':>9} {'eval s':>7}")
    for pipeline, r in report.items():
        lo, hi = r["spread_seconds"]
        print(f"{pipeline:>18} {r['median_epoch_seconds']:15.2f} {f'{lo:.2f}-{hi:.2f}':>13} "
              f"{r['images_per_second']:9.0f} {r['median_eval_seconds']:7.2f}")
    print(f"device-resident is {ratio:.2f}x faster per training epoch on {utils.device_name(device)}")
    if "device, NCHW" in report:
        layout = report["device, NCHW"]["median_epoch_seconds"] / report["device"]["median_epoch_seconds"]
        print(f"channels_last makes the device-resident epoch {layout:.2f}x faster than the default NCHW layout")
    if BLOCK1_DROPOUT in report:
        dropout = report[BLOCK1_DROPOUT]["median_epoch_seconds"] / report["device"]["median_epoch_seconds"]
        print(f"no dropout in block 1 makes the device-resident epoch {dropout:.2f}x faster than design v3's dropout")
    if NO_ELASTIC in report:
        cost = report["device"]["median_epoch_seconds"] / report[NO_ELASTIC]["median_epoch_seconds"]
        print(f"the elastic distortion makes the device-resident epoch {cost:.2f}x slower")
    bf16, fp32 = precision_label(torch.bfloat16), precision_label(torch.float32)
    if bf16 in report or fp32 in report:
        slow, fast = (report[fp32], report["device"]) if fp32 in report else (report["device"], report[bf16])
        gain = slow["median_epoch_seconds"] / fast["median_epoch_seconds"]
        print(f"bf16 autocast makes the device-resident epoch {gain:.2f}x faster than float32")
    epochs = utils.RECIPES[args.model].epochs
    full = epochs * (report["device"]["median_epoch_seconds"] + report["device"]["median_eval_seconds"])
    print(f"one {epochs}-epoch run, device pipeline: {epochs} x (train + eval) = {full:.0f}s ({full / 60:.1f} min)"
          + (f" for {runs['device']['images']:,} training images" if args.subset else ""))
    print(f"arithmetic floor: {macs / 1e6:.2f} M multiply-adds per image (fwd+bwd) x {runs['device']['images']:,} "
          f"images / {rate / 1e9:.1f} G multiply-adds/s (matmul) = {floor:.2f}s per epoch "
          f"(the device-resident epoch takes {report['device']['median_epoch_seconds'] / floor:.0f}x that)")

    payload = {"model": args.model, "config": vars(cfg), "subset": args.subset, "device": utils.device_name(device),
               "training_precision": utils.precision_name(dtype),
               "cpu_native_bf16": utils.cpu_has_native_bf16() if device.type == "cpu" else None,
               "versions": utils.library_versions(),
               "speedup": ratio, "full_run_seconds": full, "macs_per_image_fwd_bwd": macs,
               "matmul_macs_per_second": rate, "floor_epoch_seconds": floor, "pipelines": report}
    name = "cpu" if device.type == "cpu" else utils.device_name(device).replace(" ", "_")
    utils.write_json_atomic(out / f"bench_{name}.json", payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
