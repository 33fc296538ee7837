"""Design v33's fresh test runs (results/validation/v33/PLAN.md): ``train.py`` itself, with ``model.Model_3``
replaced, for these runs only, by design v33's model: the candidate its validation round adopted (``FROZEN_ARM``
of ``results/validation/run.py``), trained with Model_3's recipe (``utils.RECIPES["Model_3"]``, design v17's,
which design v33 keeps).

    OMP_NUM_THREADS=1 python results/design_v33/fresh.py --seed 9831 --data-dir ../shared/mnist --no-download \
        --out results/design_v33/Model_3

Every argument goes to ``train.main``. It exists so that the fresh runs could run in the session that froze the
design, before ``model.py``'s Model_3 takes these layers (a change that rewrites the README's account of the final
model). Once it has, ``train.py --model Model_3`` on one of these seeds must give the same run, epoch by epoch.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "results" / "validation")]

import model  # noqa: E402
import run as validation  # noqa: E402
import train  # noqa: E402

FROZEN_ARM = "v33_block2_18first"  # adopted by design v33's rule (results/validation/v33/README.md)


def design_v33_model() -> model.StagedNet:
    """Design v33's Model_3: the layers of ``FROZEN_ARM``, Model_3's dropout (0.02, none in block 1)."""
    return validation.ARMS[FROZEN_ARM][1]()


if __name__ == "__main__":
    model.Model_3 = design_v33_model  # train.main builds getattr(model, "Model_3")()
    sys.exit(train.main(sys.argv[1:]))
