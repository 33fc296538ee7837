"""Which MNIST test images the ten fresh-seed Model_3 runs (design v17, seeds 9801-9810) get wrong, and how far
their mistakes overlap: the same images for every seed, or different ones.

    python results/Model_3/errors.py --data-dir ../shared/mnist     # writes results/Model_3/errors.json

Each seed's committed weights are its run's epoch-15 moving average, the model its last epoch scored, so its
error count here is (100 - epoch 15's test accuracy) * 100. Reads only committed weights and the test set; trains
nothing, chooses nothing.
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import model  # noqa: E402
import utils  # noqa: E402

SEEDS = list(range(9801, 9811))


def overlap(predictions: dict[int, torch.Tensor], labels: torch.Tensor) -> dict:
    """From each seed's predictions over the same images: its wrong images, how many images exactly k seeds get
    wrong (k = 1..n), and the errors of the seeds' majority vote (ties go to the smallest class)."""
    wrong = {seed: (p != labels).nonzero().flatten().tolist() for seed, p in predictions.items()}
    times = collections.Counter(i for images in wrong.values() for i in images)
    votes = F.one_hot(torch.stack(list(predictions.values()), 1), 10).sum(1)  # images x classes
    always = sorted(i for i, k in times.items() if k == len(predictions))
    return {"errors": {str(seed): len(images) for seed, images in wrong.items()},
            "missed_by_exactly": {str(k): sum(v == k for v in times.values()) for k in range(1, len(wrong) + 1)},
            "missed_by_any": len(times),
            "majority_vote_errors": int((votes.argmax(1) != labels).sum()),
            "missed_by_all": [{"index": i, "label": int(labels[i]),
                               "predicted": [int(p[i]) for p in predictions.values()]} for i in always],
            "wrong": {str(seed): images for seed, images in wrong.items()}}


def measure(data_dir: str | Path) -> dict:
    """The record ``errors.json`` holds, measured afresh from the ten weights files and the test set in
    ``data_dir``."""
    device = torch.device("cpu")
    test = utils.eval_loader(data_dir, device, download=False)
    predictions, labels = {}, None
    for seed in SEEDS:
        net = utils.load_weights(model.Model_3(), HERE / f"Model_3_seed{seed}.pt")
        _, predictions[seed], labels = utils.predict(net, test, device)
    return overlap(predictions, labels)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="data", help="MNIST root (default: data)")
    args = p.parse_args()
    try:
        result = measure(args.data_dir)
    except utils.DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    utils.write_json_atomic(HERE / "errors.json", result)
    print("test errors per seed:", ", ".join(f"{s}: {n}" for s, n in result["errors"].items()))
    print("images missed by exactly k of the 10 seeds:",
          ", ".join(f"k={k}: {n}" for k, n in result["missed_by_exactly"].items()))
    print(f"missed by any: {result['missed_by_any']}; majority vote of the 10: "
          f"{result['majority_vote_errors']} errors")
    print("missed by all 10 (label -> predictions):",
          "; ".join(f"#{m['index']} {m['label']} -> {''.join(map(str, m['predicted']))}"
                    for m in result["missed_by_all"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
