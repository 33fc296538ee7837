"""Design v17's model and recipe on test seeds through the same loop as ``train.py``: Model_2's layers with
Model_3's dropout (``results/validation/run.py``'s ``design_v4_model``: 7,442 parameters), trained with today's
``utils.RECIPES["Model_3"]``, which design v33 did not change. ``train.py --model Model_3`` trained exactly this
before ``Model_3`` took design v33's layers; it cannot since.

    OMP_NUM_THREADS=1 python results/design_v17/paired/more_seeds/run.py --data-dir ../shared/mnist 9841 9843

writes ``design_v17_seed<N>.json`` (what ``train.py`` writes for a run) and ``.pt`` beside this file, and prints
the run's log; a seed whose JSON exists is skipped, so a stopped queue can be started again.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[3]), str(HERE.parents[2] / "validation")]

import run as validation  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = train.Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("seeds", type=train.SEED, nargs="+")
    parser.add_argument("--data-dir", required=True, help="folder with MNIST/raw")
    args = parser.parse_args(argv)
    train.require_data(parser, args.data_dir, download=False)  # both splits first: one line and exit 2 if missing
    device = torch.device("cpu")
    for seed in args.seeds:
        if (HERE / f"design_v17_seed{seed}.json").exists():
            continue
        net, cfg = validation.design_v4_model(), utils.recipe("Model_3", seed=seed)
        start = time.perf_counter()
        history = utils.train_model(net, cfg, args.data_dir, device, download=False)
        record = utils.run_record("design_v17", net, cfg, history, device, time.perf_counter() - start)
        utils.save_run(HERE / f"design_v17_seed{seed}", record, net)
    return 0


if __name__ == "__main__":
    sys.exit(main())
