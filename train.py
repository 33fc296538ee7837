"""Train an S7 model from the command line, over one or several seeds.

    python train.py --model Model_3 --epochs 15 --seeds 1 2 3 4 5 --data-dir data --out runs

Each (model, seed) run writes ``<out>/<model>_seed<seed>.json`` (config, device, training precision, library
versions, parameter count, per-epoch metrics, wall time; written atomically) and its final weights
``<out>/<model>_seed<seed>.pt`` (a ``state_dict``; load it with ``torch.load(path, weights_only=True)``). A seed
whose JSON already exists is skipped, so the same command after a kill trains only the seeds that had not finished
(the seed it was killed in starts again from epoch 1); a JSON of other settings, or of a run on another device,
thread count or training precision, is refused before any seed trains. A training option left out takes the model's
recipe (``utils.RECIPES``); ``--pipeline``, ``--holdout`` and ``--holdout-block`` default to the device pipeline and
the test set, as every recipe has them. Bad input gets one line on stderr and exit code 2.

    python train.py --evaluate results/Model_3/Model_3_seed9831.pt [--model Model_3]

evaluates a weights file on the whole MNIST test set instead (seconds): accuracy, error count and the confusion
counts. Without ``--model`` it uses the architecture the weights fit; the training options are not used.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

import model as models
import utils

MODELS = ("Model_1", "Model_2", "Model_3")
SUMMARY_KEYS = set(utils.last_epochs_summary([0.0]))  # the summary a finished run records, which results_table reads


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` adds "(default: X)" only where X is a value: options whose default is the recipe's (None here)
    say so in their own help."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, exit 2: no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def number(kind: type, low: float, high: float = float("inf"), rule: str = "must be a positive number",
           low_inclusive: bool = False, high_inclusive: bool = True):
    """An argparse type: ``kind(text)`` within ``(low, high]`` (``[`` / ``)`` with ``low_inclusive`` /
    ``high_inclusive=False``), else ``rule``."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        above = value >= low if low_inclusive else value > low
        below = value <= high if high_inclusive else value < high
        if not (above and below and value < float("inf")):  # NaN fails every comparison
            raise argparse.ArgumentTypeError(f"{text!r} {rule}")
        return value
    return parse


def positive(kind: type):
    """A strictly positive, finite ``kind``."""
    return number(kind, 0)


ANGLE = number(float, 0, 180, "must be between 0 and 180 degrees", low_inclusive=True)
COUNT = number(int, 0, rule="must be >= 0", low_inclusive=True)
# NumPy's generator takes seeds below 2**32 (utils.set_seed); checked here, before any seed of a list trains
SEED = number(int, 0, 2**32 - 1, f"must be a whole number from 0 to {2**32 - 1:,}", low_inclusive=True)
SHIFT = number(float, 0, 0.5, "must be between 0 and 0.5 (a fraction of the image size)", low_inclusive=True)
SCALE = number(float, 0, 0.5, "must be between 0 and 0.5 (factors from 1 - SCALE to 1 + SCALE)", low_inclusive=True)
SHEAR = number(float, 0, 45, "must be between 0 and 45 degrees", low_inclusive=True)
ALPHA = number(float, 0, rule="must be >= 0 (0: no elastic distortion)", low_inclusive=True)
# the blur's int(8 sigma + 1) taps, reflect-padded, must fit a 28-pixel image: sigma < 6.875 (utils.blur_matrix);
# 6.5 is a round bound below that
SIGMA = number(float, 0, 6.5, "must be above 0 and at most 6.5 pixels (a bound that keeps the blur within a "
                              "28-pixel image)")
DECAY = number(float, 0, 1, "must be at least 0 and below 1 (0: no moving average)", low_inclusive=True,
               high_inclusive=False)
SMOOTHING = number(float, 0, 1, "must be at least 0 and below 1 (0: no label smoothing)", low_inclusive=True,
                   high_inclusive=False)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description="Train an S7 MNIST model; defaults come from the model's recipe (utils.RECIPES).")
    p.add_argument("--model", choices=MODELS,
                   help="architecture from model.py (default: Model_3; with --evaluate, the one the weights fit)")
    p.add_argument("--epochs", type=positive(int), help="epochs (recipe: 15)")
    p.add_argument("--batch-size", type=positive(int), help="training batch size (recipe: 128; Model_3: 64)")
    p.add_argument("--lr", type=positive(float), help="constant LR, or OneCycle's peak LR (recipe)")
    p.add_argument("--rotation", type=ANGLE, help="max rotation in degrees for augmentation (recipe)")
    p.add_argument("--translation", type=SHIFT,
                   help="max random shift per axis, as a fraction of the image size, e.g. 0.1 (recipe)")
    p.add_argument("--scale", type=SCALE,
                   help="random scaling: each image gets its own factor in [1 - SCALE, 1 + SCALE], e.g. 0.1 "
                        "(recipe)")
    p.add_argument("--shear", type=SHEAR, metavar="DEGREES",
                   help="random shear parallel to the x axis: each image gets its own angle in [-DEGREES, DEGREES], "
                        "as RandomAffine(shear=DEGREES) draws it (recipe: off)")
    p.add_argument("--elastic", type=ALPHA, metavar="ALPHA",
                   help="elastic distortion after the rotation and scaling, as ElasticTransform(alpha=ALPHA) draws "
                        "it, e.g. 24; 0: off (recipe: Model_3 24, design v17; otherwise off)")
    p.add_argument("--elastic-sigma", type=SIGMA, metavar="SIGMA",
                   help="the Gaussian, in pixels, that smooths the elastic field (recipe: 4)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction,
                   help="train under bfloat16 autocast on a CPU with native bf16, float32 elsewhere "
                        "(default: the recipe's)")
    p.add_argument("--ema", type=DECAY, metavar="DECAY",
                   help="evaluate and keep an exponential moving average of the weights with this decay per step, "
                        "e.g. 0.999; 0: off (recipe: Model_3 0.999, design v7; otherwise off; use 0 for runs of "
                        "fewer than a few thousand steps)")
    p.add_argument("--label-smoothing", type=SMOOTHING, metavar="EPS",
                   help="train on targets that move EPS of the label's weight evenly onto all classes, e.g. 0.1; "
                        "evaluation is unchanged (recipe: off)")
    p.add_argument("--clean-epochs", type=COUNT, metavar="N",
                   help="the last N epochs train on the images as they are, without rotation, shifts, scaling, "
                        "shear or elastic distortion; 0: off (recipe: off)")
    p.add_argument("--recalibrate-bn", type=COUNT, metavar="N",
                   help="before each evaluation, re-estimate BatchNorm's statistics on the first N training images "
                        "(not held out) as they are, e.g. 10000; the log also gives the score without; 0: off "
                        "(recipe: off)")
    p.add_argument("--seed", type=SEED, metavar="N", help="one seed (same as --seeds N; recipe: 1)")
    p.add_argument("--seeds", type=SEED, nargs="+", help="several seeds, run one after another")
    p.add_argument("--pipeline", choices=("device", "conventional"), default="device",
                   help="device-resident tensors or torchvision transforms + DataLoader")
    p.add_argument("--holdout", type=COUNT, default=0, metavar="N",
                   help="evaluate on the last N training images instead of the test set, for tuning")
    p.add_argument("--holdout-block", type=int, default=-1, metavar="B",
                   help="with --holdout N: hold out training images B*N to (B+1)*N-1 instead of the last N")
    p.add_argument("--subset", type=positive(int), metavar="N",
                   help="use only the first N images of each split (smoke runs)")
    p.add_argument("--device", help="cuda, mps or cpu (default: best available)")
    p.add_argument("--data-dir", default="data", help="folder holding MNIST/raw (downloaded there if missing)")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    p.add_argument("--out", default="runs", help="folder for the per-seed JSON files and weights")
    p.add_argument("--evaluate", metavar="PATH",
                   help="evaluate a saved state_dict on the whole test set instead of training (the training options "
                        "are not used)")
    return p


def usable_device(parser: argparse.ArgumentParser, name: str | None) -> torch.device:
    """The device called ``name`` (default: the best available), or a one-line error if it cannot be used."""
    try:
        device = utils.get_device(name)
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as err:
        parser.error(f"device {name!r} is not usable here ({first_line(err)}); use cuda, mps or cpu")
    if device.type not in ("cuda", "mps", "cpu"):  # "meta" and the like hold no data to train on
        parser.error(f"device {name!r} is not usable here (it cannot train); use cuda, mps or cpu")
    return device


def require_data(parser: argparse.ArgumentParser, data_dir: str, download: bool) -> int:
    """Both MNIST splits under ``data_dir`` (fetched if ``download``), or a one-line error: before any output.
    Returns the number of training images."""
    try:
        train = utils.load_mnist(data_dir, True, download)
        utils.load_mnist(data_dir, False, download)
    except utils.DataError as err:
        parser.error(str(err))
    return len(train)


def writable_folder(parser: argparse.ArgumentParser, path: str) -> Path:
    """``--out`` as a ``Path``, or a one-line error before any work when a part of it that exists is a file."""
    out = Path(path)
    folder = next(p for p in (out, *out.parents) if p.exists())  # the part of --out that exists already
    if not folder.is_dir():
        parser.error(f"--out {out}: {folder} is a file, not a folder; pick another --out")
    return out


def is_number(value) -> bool:
    """A finite int or float (not a bool): what a results file's summary holds."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type when the message is empty."""
    return (str(err).splitlines() or [type(err).__name__])[0]


def load_for_evaluation(parser: argparse.ArgumentParser, path: str, name: str | None) -> tuple[str, torch.nn.Module]:
    """The model ``name`` with the weights in ``path`` loaded, or a one-line error: a missing or unreadable file,
    or weights of another architecture.

    Without ``name``: the architecture the weights fit (the three models' weights differ in shape, so at most one
    does). Before design v33, Model_3 had Model_2's layers: such a run's weights fit Model_2, and when the JSON
    that train.py wrote beside them names another model, the name printed says both.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        parser.error(f"{path}: no such file; pass a weights file written by train.py (results/Model_3/*.pt)")
    except Exception as err:  # pickle, zip or weights_only errors: all mean "not a saved state_dict"
        parser.error(f"{path} is not a state_dict saved with torch.save ({first_line(err)[:120]})")
    if not isinstance(state, dict):
        parser.error(f"{path} holds a {type(state).__name__}, not a state_dict; save net.state_dict()")
    fits = {}
    for candidate in MODELS:
        net = getattr(models, candidate)()
        try:
            net.load_state_dict(state)
        except Exception:  # missing or unexpected keys, wrong shapes, keys that are not strings
            continue
        fits[candidate] = net
    if not fits:
        parser.error(f"{path} holds no S7 model's weights (it fits none of {', '.join(MODELS)})")
    if name is not None:
        if name not in fits:
            parser.error(f"{path} does not hold {name} weights (it fits {' and '.join(fits)}); "
                         f"pass --model {next(iter(fits))} or leave --model out")
        return name, fits[name]
    found, net = next(iter(fits.items()))
    try:
        recorded = json.loads(Path(path).with_suffix(".json").read_text()).get("model")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if isinstance(recorded, str) and recorded != found:
        return f"{found} (its JSON names {recorded}: an earlier design's {recorded}, with {found}'s layers)", net
    return found, net


def evaluate_weights(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``--evaluate``: test accuracy, error count and confusion counts of a weights file, as text."""
    name, net = load_for_evaluation(parser, args.evaluate, args.model)
    device = usable_device(parser, args.device)
    try:
        loader = utils.eval_loader(args.data_dir, device, not args.no_download)
    except utils.DataError as err:
        parser.error(str(err))
    utils.to_device(net, device)
    loss, acc = utils.evaluate(net, loader, device)
    _, preds, labels = utils.predict(net, loader, device)
    print(f"{args.evaluate}: {name}, {utils.count_parameters(net):,} parameters, on {utils.device_name(device)}")
    print(f"test loss {loss:.4f} | test accuracy {acc:.2f} %")
    print(utils.error_report(preds, labels))
    return 0


def run_one(name: str, cfg: utils.Config, args: argparse.Namespace, device: torch.device, out: Path) -> dict:
    """Train one seed and write its weights and JSON; returns the JSON payload."""
    net = getattr(models, name)()
    start = time.perf_counter()
    history = utils.train_model(net, cfg, args.data_dir, device, download=not args.no_download,
                                subset=args.subset)
    record = utils.run_record(name, net, cfg, history, device, time.perf_counter() - start, args.subset)
    utils.save_run(out / f"{name}_seed{cfg.seed}", record, net)
    return record


def results_table(payloads: list[dict], target: float = utils.TARGET_ACC) -> str:
    """Per seed: best, last, min and mean of the last 5 epochs, first epoch >= target; then mean +- std."""
    head = f"{'seed':>6} {'best':>11} {'last':>11} {'min last5':>11} {'mean last5':>11} {'first>=' + str(target):>12}"
    lines = [head]
    for p in payloads:
        s = p["summary"]
        lines.append(f"{p['seed']:>6} {s['best']:11.2f} {s['last']:11.2f} {s['min_last5']:11.2f} "
                     f"{s['mean_last5']:11.2f} {str(s['first_at_target'] or '-'):>12}")
    if len(payloads) > 1:  # the columns are wide enough for "99.48±0.05"
        def stat(key: str) -> str:
            values = [p["summary"][key] for p in payloads]
            return f"{statistics.mean(values):.2f}±{statistics.stdev(values):.2f}"
        lines.append(f"{'mean':>6} {stat('best'):>11} {stat('last'):>11} {stat('min_last5'):>11} "
                     f"{stat('mean_last5'):>11}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.evaluate is not None:  # an empty path too: it must not fall through to a training run
        if not args.evaluate.strip():
            parser.error("--evaluate needs the path of a weights file, e.g. results/Model_3/Model_3_seed9831.pt")
        return evaluate_weights(parser, args)
    args.model = args.model or "Model_3"
    if args.seed is not None and args.seeds:
        parser.error("give --seed or --seeds, not both")
    seeds = args.seeds or [args.seed if args.seed is not None else utils.RECIPES[args.model].seed]
    overrides = {k: v for k, v in dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                       rotation=args.rotation, translation=args.translation, scale=args.scale,
                                       shear=args.shear, elastic=args.elastic, elastic_sigma=args.elastic_sigma,
                                       bf16=args.bf16, ema=args.ema, label_smoothing=args.label_smoothing,
                                       clean_epochs=args.clean_epochs, recalibrate_bn=args.recalibrate_bn).items()
                 if v is not None}
    overrides |= {"pipeline": args.pipeline, "holdout": args.holdout, "holdout_block": args.holdout_block}
    if args.holdout_block != -1 and not args.holdout:
        parser.error("--holdout-block needs --holdout N (the size of the blocks)")
    recipe = utils.recipe(args.model, **overrides)
    if recipe.clean_epochs > recipe.epochs:
        parser.error(f"--clean-epochs {recipe.clean_epochs} is more than the run's {recipe.epochs} epochs; "
                     f"give at most {recipe.epochs}")
    device = usable_device(parser, args.device)
    n = require_data(parser, args.data_dir, not args.no_download)
    if args.holdout:
        try:
            utils.held_out_images(n if args.subset is None else min(args.subset, n), args.holdout, args.holdout_block)
        except ValueError as err:
            parser.error(str(err))

    out = writable_folder(parser, args.out)
    configs = {seed: utils.recipe(args.model, seed=seed, **overrides) for seed in seeds}
    n_params = utils.count_parameters(getattr(models, args.model)())
    finished = {}
    for seed, cfg in configs.items():  # decide everything before training: a clash must not cost a run
        path = out / f"{args.model}_seed{seed}.json"
        if path.exists():
            try:
                payload = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                parser.error(f"{path} is not a results file (invalid JSON); move it away or pick another --out")
            except OSError as err:  # a folder of that name, or no permission to read it
                parser.error(f"{path} cannot be read ({first_line(err)}); move it away or pick another --out")
            if not isinstance(payload, dict):
                parser.error(f"{path} is not a results file (not a JSON object); move it away or pick another --out")
            if not isinstance(payload.get("config"), dict) or not utils.same_experiment(payload["config"], cfg,
                                                                                           args.subset):
                parser.error(f"{path} holds a run with other settings; move it away or pick another --out")
            if payload.get("parameters") != n_params:
                parser.error(f"{path} holds a run of another {args.model} ({payload.get('parameters')} parameters, "
                             f"now {n_params}); move it away or pick another --out")
            summary = payload.get("summary")
            if not isinstance(summary, dict) or not SUMMARY_KEYS <= summary.keys() or payload.get("seed") != seed \
                    or not all(is_number(summary[k]) for k in SUMMARY_KEYS - {"first_at_target"}):
                parser.error(f"{path} is not a finished run's results file (no summary of seed {seed}'s epochs); "
                             f"move it away or pick another --out")
            ours = (utils.device_name(device), utils.precision_name(utils.training_dtype(cfg, device)))
            theirs = (payload.get("device"), payload.get("training_precision", "float32"))
            if theirs != ours:  # the same settings elsewhere are another run: it must not be averaged with these
                parser.error(f"{path} holds a run on {theirs[0]} in {theirs[1]}; this one would train on {ours[0]} "
                             f"in {ours[1]}, a different run (README: A rerun is a different run); move it away or "
                             f"pick another --out")
            finished[seed] = payload

    payloads = []
    for seed, cfg in configs.items():
        if seed in finished:
            print(f"{args.model} seed {seed}: already done in {out}, skipped")
            payloads.append(finished[seed])
            continue
        print(f"\n== {args.model}, seed {seed} ==")
        try:
            payloads.append(run_one(args.model, cfg, args, device, out))
        except utils.TrainingDiverged as err:
            print(f"{parser.prog}: error: {err}", file=sys.stderr)
            return 1
    where = "validation" if args.holdout else "test"
    print(f"\n{args.model}: {where} accuracy (%) over {len(payloads)} seed(s), {cfg.epochs} epochs")
    print(results_table(payloads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
