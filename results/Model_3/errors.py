"""Which MNIST test images the ten fresh-seed runs of a design's Model_3 get wrong, and how far their mistakes
overlap: the same images for every seed, or different ones.

    python results/Model_3/errors.py --data-dir ../shared/mnist                      # design v33, today's Model_3
    python results/Model_3/errors.py --data-dir ../shared/mnist --design v17         # design v17's fresh runs

writes ``errors.json`` beside the runs it scores: ``results/Model_3/`` (seeds 9831-9840) or
``results/design_v17/Model_3/`` (seeds 9801-9810, Model_2's layers). Each seed's committed weights are its run's
epoch-15 moving average, the model its last epoch scored, so its error count here is (100 - epoch 15's test
accuracy) * 100. Reads only committed weights and the test set; trains nothing, chooses nothing.
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE.parent / "validation")]

import model  # noqa: E402
import run as validation  # noqa: E402
import utils  # noqa: E402

# design -> (the folder of its fresh runs, their seeds, the model they trained)
DESIGNS = {"v33": (HERE, range(9831, 9841), model.Model_3),
           "v17": (HERE.parent / "design_v17" / "Model_3", range(9801, 9811), validation.design_v4_model)}


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


def measure(data_dir: str | Path, design: str = "v33") -> dict:
    """The record a design's ``errors.json`` holds, measured afresh from its ten weights files and the test set in
    ``data_dir``."""
    folder, seeds, build = DESIGNS[design]
    device = torch.device("cpu")
    test = utils.eval_loader(data_dir, device, download=False)
    predictions, labels = {}, None
    for seed in seeds:
        net = utils.load_weights(build(), folder / f"Model_3_seed{seed}.pt")
        _, predictions[seed], labels = utils.predict(net, test, device)
    return overlap(predictions, labels)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="data", help="MNIST root (default: data)")
    p.add_argument("--design", choices=DESIGNS, default="v33", help="whose fresh runs to score (default: v33)")
    args = p.parse_args()
    try:
        result = measure(args.data_dir, args.design)
    except utils.DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    utils.write_json_atomic(DESIGNS[args.design][0] / "errors.json", result)
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
