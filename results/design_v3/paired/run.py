"""A check after design v4's fresh seeds, choosing nothing: design v3's Model_3 on design v4's fresh seeds.

    OMP_NUM_THREADS=1 python results/design_v3/paired/run.py SEED --data-dir ../shared/mnist

Design v4 changed one thing, block 1's dropout, and its ten fresh seeds came out higher on the test set than design
v3's ten (other seeds). This trains design v3's model (dropout 0.02 after every conv, block 1's included) with
today's recipe on one of design v4's seeds, on the test set, so that the two designs can be compared seed by seed:
same seed, same initial weights and the same order and angles of the training images (the loader has its own
generator); block 1's dropout differs and, through the shared random stream it draws from, every later dropout
mask. Writes ``seed<SEED>.json`` beside this file; a seed whose JSON exists is not
run again. The design is frozen and its fresh runs are done: whatever this shows changes nothing.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

import model  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402


def design_v3_model() -> model.StagedNet:
    """Design v3's Model_3: Model_2's layers (Model_3's until design v33) with dropout 0.02 in block 1 too."""
    return model.StagedNet((8, 16), 8, (16, 16, 16), dropout=0.02)


def main() -> int:
    p = train.Parser(description=__doc__.splitlines()[0])
    p.add_argument("seed", type=train.SEED)
    p.add_argument("--data-dir", default="data")
    args = p.parse_args()
    out = HERE / f"seed{args.seed}.json"
    if out.exists():
        print(f"{out} exists, skipped")
        return 0
    train.require_data(p, args.data_dir, download=False)  # one line and exit 2, not a traceback
    cfg = utils.recipe("Model_3", seed=args.seed, bf16=False)  # float32, as when it ran (bf16 came in design v5)
    net = design_v3_model()
    print(f"design v3's Model_3 (dropout in block 1 too), seed {args.seed}")
    start = time.perf_counter()
    history = utils.train_model(net, cfg, args.data_dir, download=False)
    record = utils.run_record("design v3 Model_3", net, cfg, history, utils.get_device(),
                              wall_seconds=time.perf_counter() - start)
    utils.write_json_atomic(out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
