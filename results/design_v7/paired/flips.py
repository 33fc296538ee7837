"""Which test images scaling changes: design v12's and design v7's final weights on seeds 9201-9210, image by image.

    OMP_NUM_THREADS=1 python results/design_v7/paired/flips.py --data-dir ../shared/mnist   # writes flips.json

Scores each seed's saved weights (the epoch-15 moving average; ``results/design_v12/Model_3/`` for design v12, this
folder for design v7's recipe) on the 10,000 test images and takes, per seed and image, design v12's outcome minus
design v7's (+1, 0 or -1). From these it reports how many images each seed flips either way, and how far the sample
of images alone moves a 10-seed paired estimate on a split of 5,000 images: the variance over images of the 10-seed
mean difference, less the part the seeds' own noise leaves in it (each image's variance over seeds / 10), over
5,000, in points. That assumes a split's 5,000 images are drawn the way test images are; a block of consecutive
training images may group writers, which would make this part larger. A check on the test set made after design v12
was frozen and after design v13's plan was committed; it chooses nothing.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "results" / "validation")]

import run as validation  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402

SEEDS = range(9201, 9211)


def outcomes(path: Path, loader) -> torch.Tensor:
    """1.0 where the weights at ``path`` classify a test image right, else 0.0, in the test set's order."""
    # designs v7 and v12's Model_3: Model_2's layers (today's Model_3 has design v33's)
    net = utils.load_weights(validation.design_v4_model(), path).eval()
    with torch.no_grad():
        return torch.cat([(net(x).argmax(1) == y).float() for x, y in loader])


def measure(data_dir: str | Path) -> dict:
    """The record ``flips.json`` holds, measured afresh from the saved weights and the test set in ``data_dir``."""
    loader = utils.eval_loader(data_dir, download=False)
    v12 = torch.stack([outcomes(ROOT / f"results/design_v12/Model_3/Model_3_seed{s}.pt", loader) for s in SEEDS])
    v7 = torch.stack([outcomes(HERE / f"Model_3_seed{s}.pt", loader) for s in SEEDS])
    delta = v12 - v7  # seeds x images
    mean = delta.mean(0)  # per image, over the ten seeds
    seed_part = (delta.var(0) / len(SEEDS)).mean().item()
    image_part = max(mean.var().item() - seed_part, 0.0)
    return {
        "seeds": list(SEEDS),
        "design_v12_acc": [round(100 * a, 2) for a in v12.mean(1).tolist()],
        "design_v7_acc": [round(100 * a, 2) for a in v7.mean(1).tolist()],
        "only_design_v12_right": (delta == 1).sum(1).tolist(),
        "only_design_v7_right": (delta == -1).sum(1).tolist(),
        "paired_delta_points": round(100 * mean.mean().item(), 3),
        "images_flipped_on_any_seed": int((delta != 0).any(0).sum()),
        "images_flipped_toward_design_v7_on_5_or_more_seeds": int(((delta == -1).sum(0) >= 5).sum()),
        "images_flipped_toward_design_v12_on_5_or_more_seeds": int(((delta == 1).sum(0) >= 5).sum()),
        "sd_from_the_image_sample_5000_points": round(100 * (image_part / 5000) ** 0.5, 3),
        "sd_from_the_seeds_10_seeds_5000_points": round(100 * (seed_part / 5000) ** 0.5, 3),
    }


def main() -> int:
    p = train.Parser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="data")
    args = p.parse_args()
    train.require_data(p, args.data_dir, download=False)  # one line and exit 2, not a traceback
    record = measure(args.data_dir)
    utils.write_json_atomic(HERE / "flips.json", record)
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
