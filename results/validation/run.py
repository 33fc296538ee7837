"""The validation runs of designs v2 to v34: one arm (layers + recipe) and one seed per call.

    OMP_NUM_THREADS=1 python results/validation/run.py ARM SEED --data-dir ../shared/mnist
    python results/validation/run.py --table v3      # a round's finished arms: per-seed means, mean +- std, loss
    python results/validation/run.py --compare ARM REFERENCE   # paired: per-seed difference, mean, SE, n (of the
                                                             # last-five mean, then of the lowest epoch)
    python results/validation/run.py --pooled ARM REF ARM2 REF2  # several pairs' per-seed differences together

Every run trains on 55,000 training images and evaluates on the other 5,000 (``holdout=5000``): the last 5,000 in
v2 to v12; from v13 on, block ``seed % 12`` of the twelve blocks of 5,000 (``holdout_block``), so each seed of a
round holds out other images and the spread of paired differences includes which images were held out. The test
set is never loaded. Each arm is a model from ``model.py`` (or ``StagedNet`` with the layers a candidate
needs) and a recipe from ``utils.RECIPES`` with the overrides named below. Writes ``<ROUND>/<ARM>/seed<SEED>.json``
beside this file (``v2/`` to ``v34/``, the design the arm belongs to); a seed whose JSON exists is not run
again. A run of a v19 candidate arm also writes its reference arm's file (``DERIVED``): the same weights scored
without the re-estimation.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import model  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402
from torch import nn  # noqa: E402


def design_v4_model(activation: Callable[[], nn.Module] = nn.ReLU, dropout: float = 0.02) -> model.StagedNet:
    """Model_3 since design v4: Model_2's layers, dropout 0.02 after the transition and block 2, none in block 1;
    ``activation`` in every conv_block (design v26's candidates change it), ``dropout`` the rate (design v30's)."""
    return model.StagedNet((8, 16), 8, (16, 16, 16), dropout=dropout, block1_dropout=False, activation=activation)


def block1_10_model() -> model.StagedNet:
    """Design v22's C2: design v4's model with block 1's first conv at 10 channels (7,752 parameters)."""
    return model.StagedNet((10, 16), 8, (16, 16, 16), dropout=0.02, block1_dropout=False)


def block2_model(widths: tuple[int, int, int]) -> model.StagedNet:
    """Design v33's candidates: design v4's model with block 2's three 3x3 convs at ``widths`` (16, 16, 16 there)."""
    return model.StagedNet((8, 16), 8, widths, dropout=0.02, block1_dropout=False)


def four_convs_model() -> model.StagedNet:
    """Designs v15 and v16's candidate: design v4's model with block 2 of four 3x3 convs, 8->12->12->16->16."""
    return model.StagedNet((8, 16), 8, (12, 12, 16, 16), dropout=0.02, block1_dropout=False)


# designs v6 and v7 test the same candidate (v7 on new seeds, judged on the lowest epoch)
EMA_ARM = "+ every evaluation scores an exponential moving average of the weights (decay 0.999 per step)"
# designs v8 and v9: their reference, and their weight-decay arms (v9 repeats v8's 1e-4 on new seeds)
V7_MODEL_3 = "design v7's Model_3 and recipe (EMA 0.999, no weight decay)"
WEIGHT_DECAY_ARM = "+ weight decay {} on every parameter"
# design v19: its candidate, and its reference (the same runs, scored as design v17 scores)
V17_SCORING = ("design v17's Model_3 and recipe, scored as design v17 scores: the moving average with the BatchNorm "
               "statistics it carried from training")
RECALIBRATE_ARM = ("+ before each evaluation, a copy of the moving average gets BatchNorm statistics re-estimated on "
                   "the first 10,000 training images not held out, as they are (dropout off, float32)")
# designs v24 and v25: design v17's recipe run again on their new seeds as the reference, and v24's no-rotation
# candidate that v25 repeats
V17_RECIPE_ARM = ("design v17's Model_3 and recipe", design_v4_model, "Model_3", {})
# design v33's adopted candidate, today's Model_3's layers (design v34 runs it again on new seeds)
BLOCK2_18FIRST_ARM = ("block 2's first conv at 18 channels instead of 16, 8->18->16->16 (7,878 parameters)",
                      partial(block2_model, (18, 16, 16)), "Model_3", {})
NO_ROTATION_ARM = ("no rotation (scaling and the elastic distortion stay)", design_v4_model, "Model_3",
                   {"rotation": 0.0})
# candidates a later round looked at again: v21's alpha 12 (v32) and v26's SiLU (v31)
ELASTIC12_ARM = ("the elastic distortion at alpha 12 instead of 24 (sigma 4)", design_v4_model, "Model_3",
                 {"elastic": 12.0})
SILU_ARM = ("SiLU instead of ReLU in every conv_block", partial(design_v4_model, nn.SiLU), "Model_3", {})


def shift_arm(translate: float, pixels: int) -> tuple:
    """Designs v27 and v28's candidate: design v17's Model_3 and recipe with whole-pixel shifts (``translate``)."""
    return ("+ each training image shifted by its own whole-pixel offset per axis, as "
            f"RandomAffine(translate=({translate}, {translate})) draws it (up to {pixels} px)", design_v4_model,
            "Model_3", {"translation": translate})


# arm -> (what it tests, model factory, recipe, overrides); ROUNDS: which design's round each arm belongs to
ARMS = {
    # step 2: which layers, trained with step 2's own recipe (constant LR 0.01, no augmentation, dropout 0.05)
    "step2_plain_16x3": ("plain 3x3 block 2: c8 c16 P t8 c16 c16 c16",
                         lambda: model.StagedNet((8, 16), 8, (16, 16, 16), dropout=0.05), "Model_2", {}),
    "step2_separable_32x4": ("depthwise-separable block 2: c8 c16 P d32 d32 d32 d32",
                             lambda: model.StagedNet((8, 16), None, (32, 32, 32, 32), dropout=0.05, separable=True),
                             "Model_2", {}),
    # step 3: the recipe on Model_2's layers (the plain block 2 that step 2 chose), one change at a time
    "step3_schedule": ("OneCycle 12 + hold 3 (peak 0.1); no augmentation; dropout 0.05",
                       lambda: model.Model_2(dropout=0.05), "Model_3", {"rotation": 0.0}),
    "step3_schedule_rotation": ("+ rotation +-7 deg; dropout 0.05",
                                lambda: model.Model_2(dropout=0.05), "Model_3", {}),
    "step3_schedule_rotation_dropout0.02": ("+ dropout 0.02",
                                            lambda: model.Model_2(dropout=0.02), "Model_3", {}),
    # after design v2's fresh seeds (not used by v2): does the separable block 2 beat the plain one under step 3's
    # recipe? Compared with step3_schedule_rotation_dropout0.02 on seeds 1-6
    "after_v2_separable_step3_recipe": ("separable block 2 with Model_3's recipe (dropout 0.02)",
                                        lambda: model.StagedNet((8, 16), None, (32, 32, 32, 32), dropout=0.02,
                                                                separable=True), "Model_3", {}),
    # design v3, step 3 (results/design_v3/PLAN.md): stage A, channel-wise dropout (a speed change)
    "v3_channel_dropout": ("Model_3's recipe with channel-wise dropout 0.02 (nn.Dropout2d)",
                           lambda: model.StagedNet((8, 16), 8, (16, 16, 16), dropout=0.02, channelwise=True),
                           "Model_3", {}),
    # stage B (stage A did not adopt channel dropout, so element-wise as in Model_3), one change each against
    # v2's step3_schedule_rotation_dropout0.02
    "v3_batch64": ("Model_3's layers and recipe, batch 64 (twice the updates; same peak LR and schedule in epochs)",
                   lambda: model.StagedNet((8, 16), 8, (16, 16, 16), dropout=0.02), "Model_3", {"batch_size": 64}),
    "v3_shift": ("Model_3's layers and recipe + random whole-pixel shifts up to 10 % of the size (up to 3 px)",
                 lambda: model.StagedNet((8, 16), 8, (16, 16, 16), dropout=0.02), "Model_3", {"translation": 0.1}),
    # design v4, step 3 (results/design_v4/PLAN.md): stage A, no dropout in block 1 (a speed change), against v3_batch64
    "v4_block1_no_dropout": ("Model_3 (batch 64) without dropout in block 1; dropout 0.02 after the transition and "
                             "block 2's convs", design_v4_model, "Model_3", {}),
    # stage B, one change each against v4_block1_no_dropout
    "v4_head24": ("+ a hidden layer in the head: GAP -> 1x1 16->24 -> ReLU -> 1x1 24->10",
                  lambda: model.StagedNet((8, 16), 8, (16, 16, 16), dropout=0.02, block1_dropout=False,
                                          head_hidden=24), "Model_3", {}),
    "v4_block1_10": ("+ block 1's first conv 8 -> 10 channels",
                     lambda: model.StagedNet((10, 16), 8, (16, 16, 16), dropout=0.02, block1_dropout=False),
                     "Model_3", {}),
    # design v5, step 3 (results/design_v5/PLAN.md): stage A, bf16 autocast for training on the CPU (a speed
    # change), against v4_block1_no_dropout
    "v5_bf16": ("v4's Model_3 and recipe, trained under bfloat16 autocast on the CPU (weights and evaluation float32)",
                design_v4_model, "Model_3", {"bf16": True}),
    # stage B, against v5_bf16
    "v5_batch32": ("+ batch 32 (same peak LR and schedule in epochs)",
                   design_v4_model, "Model_3", {"bf16": True, "batch_size": 32}),
    # design v6, step 3 (results/validation/v6/PLAN.md): one change each against v5_bf16 (design v5's Model_3)
    "v6_ema": (EMA_ARM, design_v4_model, "Model_3", {"ema": 0.999}),
    "v6_transition10": ("+ the 1x1 transition 16->8 widened to 16->10 channels (block 2's first conv 10->16)",
                        lambda: model.StagedNet((8, 16), 10, (16, 16, 16), dropout=0.02, block1_dropout=False),
                        "Model_3", {}),
    # design v7, step 3 (results/design_v7/PLAN.md): v6's EMA again, on new seeds 7-12, judged on the lowest
    # epoch; its reference is design v5's Model_3 on the same new seeds (v5_bf16's config)
    "v7_reference": ("design v5's Model_3 and recipe (the config of v5_bf16)", design_v4_model, "Model_3", {}),
    "v7_ema": (EMA_ARM, design_v4_model, "Model_3", {"ema": 0.999}),
    # design v8, step 3 (results/validation/v8/PLAN.md): weight decay at two doses on new seeds 13-18, each
    # against design v7's Model_3 and recipe (the EMA included) on the same seeds
    "v8_reference": (V7_MODEL_3, design_v4_model, "Model_3", {}),
    "v8_wd1e-4": (WEIGHT_DECAY_ARM.format("1e-4"), design_v4_model, "Model_3", {"weight_decay": 1e-4}),
    "v8_wd5e-4": (WEIGHT_DECAY_ARM.format("5e-4"), design_v4_model, "Model_3", {"weight_decay": 5e-4}),
    # design v9, step 3 (results/validation/v9/PLAN.md): v8's weight decay 1e-4 again, on new seeds 19-30
    "v9_reference": (V7_MODEL_3, design_v4_model, "Model_3", {}),
    "v9_wd1e-4": (WEIGHT_DECAY_ARM.format("1e-4"), design_v4_model, "Model_3", {"weight_decay": 1e-4}),
    # design v10, step 3 (results/validation/v10/PLAN.md): the last two untested levers on new seeds
    # 31-38, each against design v7's Model_3 and recipe on the same seeds
    "v10_reference": (V7_MODEL_3, design_v4_model, "Model_3", {}),
    "v10_pad1": ("+ block 1's first conv padded (28x28 -> 28x28; later maps 26, 13, 11, 9, 7 instead of 24, 12, "
                 "10, 8, 6)", lambda: model.StagedNet((8, 16), 8, (16, 16, 16), dropout=0.02, block1_dropout=False,
                                                     block1_padding=1), "Model_3", {}),
    "v10_nesterov": ("+ Nesterov momentum (OneCycle's momentum cycle 0.95 -> 0.85 -> 0.95 unchanged)",
                     design_v4_model, "Model_3", {"nesterov": True}),
    # design v11, step 3 (results/validation/v11/PLAN.md): OneCycle's peak LR at two doses on seeds 31-38, each
    # against v10_reference's runs on the same seeds
    "v11_peak_lr0.05": ("OneCycle's peak LR 0.1 -> 0.05 (linear scaling for batch 64)", design_v4_model, "Model_3",
                        {"lr": 0.05}),
    "v11_peak_lr0.2": ("OneCycle's peak LR 0.1 -> 0.2", design_v4_model, "Model_3", {"lr": 0.2}),
    # design v12, step 3 (results/PLAN.md): random scaling beside the rotation at two doses on
    # seeds 31-38, each against v10_reference's runs on the same seeds
    "v12_scale0.1": ("+ each training image scaled about its centre by its own factor in [0.9, 1.1]",
                     design_v4_model, "Model_3", {"scale": 0.1}),
    "v12_scale0.2": ("+ each training image scaled about its centre by its own factor in [0.8, 1.2]",
                     design_v4_model, "Model_3", {"scale": 0.2}),
    # design v13, step 3 (results/validation/v13/PLAN.md): validation blocks that rotate with the seed (seeds
    # 39-46, blocks 3-10); scaling removed again, and label smoothing, each against design v12's Model_3 and recipe
    "v13_reference": ("design v12's Model_3 and recipe (EMA 0.999, scaling [0.8, 1.2])", design_v4_model,
                      "Model_3", {}),
    "v13_scale0": ("- the random scaling (design v7's recipe)", design_v4_model, "Model_3", {"scale": 0.0}),
    "v13_label_smoothing0.1": ("+ label smoothing 0.1 in the training loss", design_v4_model, "Model_3",
                               {"label_smoothing": 0.1}),
    # design v14, step 3 (results/validation/v14/PLAN.md): on v13's seeds and blocks, each against v13_reference's
    # runs
    "v14_cycle14_hold1": ("OneCycle over epochs 1-14, the final LR held for epoch 15 only (hold 3 -> 1)",
                          design_v4_model, "Model_3", {"hold_epochs": 1}),
    "v14_ema0.9995": ("the moving average of the weights with decay 0.9995 instead of 0.999", design_v4_model,
                      "Model_3", {"ema": 0.9995}),
    # design v15, step 3 (results/validation/v15/PLAN.md): a layer change on new seeds 47-66 (blocks seed % 12),
    # run on a GPU, against design v12's Model_3 and recipe run there on the same seeds
    "v15_reference": ("design v12's Model_3 and recipe (EMA 0.999, scaling [0.8, 1.2])", design_v4_model,
                      "Model_3", {}),
    "v15_four_convs": ("block 2 of four 3x3 convs 8->12->12->16->16 instead of three 8->16->16->16 (7,890 "
                       "parameters, final map 4x4, RF 22)",
                       four_convs_model, "Model_3", {}),
    # design v16, step 3 (results/validation/v16/PLAN.md): v15's candidate again on the CPU, on v13's seeds 39-46
    # against v13_reference's runs
    "v16_four_convs": ("v15's candidate: block 2 of four 3x3 convs 8->12->12->16->16 (7,890 parameters)",
                       four_convs_model, "Model_3", {}),
    # design v17, step 3 (results/validation/v17/PLAN.md): elastic distortion at two doses, on v13's seeds 39-46
    # against v13_reference's runs
    "v17_elastic24": ("+ elastic distortion, ElasticTransform(alpha=24, sigma=4) after the rotation and scaling",
                      design_v4_model, "Model_3", {"elastic": 24.0, "elastic_sigma": 4.0}),
    "v17_elastic48": ("+ elastic distortion, ElasticTransform(alpha=48, sigma=4) after the rotation and scaling",
                      design_v4_model, "Model_3", {"elastic": 48.0, "elastic_sigma": 4.0}),
    # design v18, step 3 (results/validation/v18/PLAN.md): the last epochs without augmentation, at two lengths, on
    # v13's seeds 39-46 against v17_elastic24's runs (design v17's Model_3 and recipe)
    "v18_clean3": ("+ the last 3 epochs (13-15, the hold) train on the images as they are: no rotation, scaling or "
                   "elastic distortion", design_v4_model, "Model_3", {"clean_epochs": 3}),
    "v18_clean5": ("+ the last 5 epochs (11-15) train on the images as they are: no rotation, scaling or elastic "
                   "distortion", design_v4_model, "Model_3", {"clean_epochs": 5}),
    # design v19, step 3 (results/validation/v19/PLAN.md): BatchNorm statistics re-estimated before each
    # evaluation, on new seeds 67-78; one run scores both arms (DERIVED), so the reference's runs are the
    # candidate's own weights scored as design v17 scores them. v19_check: seed 39 once more, to compare its
    # reference scores with v17_elastic24's run of seed 39 (not part of the decision)
    "v19_reference": (V17_SCORING, design_v4_model, "Model_3", {}),
    "v19_recalibrate_bn": (RECALIBRATE_ARM, design_v4_model, "Model_3", {"recalibrate_bn": 10000}),
    "v19_check_reference": (V17_SCORING, design_v4_model, "Model_3", {}),
    "v19_check": (RECALIBRATE_ARM, design_v4_model, "Model_3", {"recalibrate_bn": 10000}),
    # design v20, step 3 (results/validation/v20/PLAN.md): v18's clean last five epochs again, on v19's seeds 67-78
    # against v19_reference's runs (design v17's recipe and scores), judged pooled with v18's eight seeds
    "v20_clean5": ("+ the last 5 epochs (11-15) train on the images as they are: no rotation, scaling or elastic "
                   "distortion (v18_clean5 on new seeds)", design_v4_model, "Model_3", {"clean_epochs": 5}),
    # design v21, step 3 (results/validation/v21/PLAN.md): the elastic distortion at half design v17's dose, on v19's
    # seeds 67-78 against v19_reference's runs
    "v21_elastic12": ELASTIC12_ARM,
    # design v22, step 3 (results/validation/v22/PLAN.md): more updates (batch 32) or more capacity (block 1's first
    # conv at 10 channels), on v19's seeds 67-78 against v19_reference's runs
    "v22_batch32": ("batch 32 instead of 64 (twice the steps; peak LR 0.1 and the per-step EMA decay 0.999 unchanged)",
                    design_v4_model, "Model_3", {"batch_size": 32}),
    "v22_block1_10": ("block 1's first conv at 10 channels instead of 8 (7,752 parameters)", block1_10_model,
                      "Model_3", {}),
    # design v23, step 3 (results/validation/v23/PLAN.md): the LR the cycle ends at and the hold keeps, a third of
    # or three times design v17's 0.001, on v19's seeds 67-78 against v19_reference's runs
    "v23_final_lr0.0003": ("the cycle ends at, and epochs 13-15 hold, LR 0.0003 instead of 0.001", design_v4_model,
                           "Model_3", {"final_lr": 0.0003}),
    "v23_final_lr0.003": ("the cycle ends at, and epochs 13-15 hold, LR 0.003 instead of 0.001", design_v4_model,
                          "Model_3", {"final_lr": 0.003}),
    # design v24, step 3 (results/validation/v24/PLAN.md): less rotation, on new seeds 79-90 with its own reference
    "v24_reference": V17_RECIPE_ARM,
    "v24_rotation3.5": ("each image turned by its own angle in +-3.5 deg instead of +-7 deg", design_v4_model,
                        "Model_3", {"rotation": 3.5}),
    "v24_rotation0": NO_ROTATION_ARM,
    # design v25, step 3 (results/validation/v25/PLAN.md): v24's no-rotation arm again, on new seeds 91-102 with its
    # own reference, judged on its own seeds and pooled with v24's pairs
    "v25_reference": V17_RECIPE_ARM,
    "v25_rotation0": NO_ROTATION_ARM,
    # design v26, step 3 (results/validation/v26/PLAN.md): another activation in every conv_block, on new seeds
    # 103-114 with its own reference
    "v26_reference": V17_RECIPE_ARM,
    "v26_silu": SILU_ARM,
    "v26_leaky": ("LeakyReLU (slope 0.1) instead of ReLU in every conv_block",
                  partial(design_v4_model, partial(nn.LeakyReLU, 0.1)), "Model_3", {}),
    # design v27, step 3 (results/validation/v27/PLAN.md): random whole-pixel shifts at two doses, on new seeds
    # 115-126 with its own reference
    "v27_reference": V17_RECIPE_ARM,
    "v27_shift0.1": shift_arm(0.1, 3),
    "v27_shift0.05": shift_arm(0.05, 1),
    # design v28, step 3 (results/validation/v28/PLAN.md): v27's shifts of up to 1 px again, on new seeds 127-138
    # with its own reference, judged on its own seeds and pooled with v27's pairs
    "v28_reference": V17_RECIPE_ARM,
    "v28_shift0.05": shift_arm(0.05, 1),
    # design v29, step 3 (results/validation/v29/PLAN.md): the hold's length and the momentum cycle, on seeds
    # 115-138 against v27's and v28's reference runs; v29_reference runs seed 127 once, to check that it repeats
    # v28_reference's run bit for bit
    "v29_reference": V17_RECIPE_ARM,
    "v29_hold5": ("OneCycle over epochs 1-10, then LR 0.001 for epochs 11-15 (hold_epochs 5 instead of 3)",
                  design_v4_model, "Model_3", {"hold_epochs": 5}),
    "v29_momentum0.9": ("SGD momentum constant at 0.9 (cycle_momentum off); the LR's cycle and hold unchanged",
                        design_v4_model, "Model_3", {"cycle_momentum": False}),
    # design v30, step 3 (results/validation/v30/PLAN.md): the dropout rate, on seeds 115-138 against v27's and
    # v28's reference runs; v30_reference runs seed 115 once, to check that it repeats v27_reference's run
    "v30_reference": V17_RECIPE_ARM,
    **{f"v30_dropout{rate}": (f"dropout {rate} instead of 0.02 after the transition and block 2's convs",
                              partial(design_v4_model, dropout=rate), "Model_3", {}) for rate in (0.01, 0.05)},
    # design v31, step 3 (results/validation/v31/PLAN.md): SiLU again, and SiLU with dropout 0.01 and five clean
    # epochs, on seeds 115-138 against v27's and v28's reference runs
    "v31_silu": SILU_ARM,
    "v31_stack": ("SiLU in every conv_block, dropout 0.01 instead of 0.02, and epochs 11-15 on the images as they are",
                  partial(design_v4_model, nn.SiLU, 0.01), "Model_3", {"clean_epochs": 5}),
    # design v32, step 3 (results/validation/v32/PLAN.md): the elastic distortion at alpha 12 again (v21's), on
    # seeds 115-138 against v27's and v28's reference runs
    "v32_alpha12": ELASTIC12_ARM,
    # and a shear parallel to the x axis, as RandomAffine(shear=10) draws it, in the affine map before the distortion
    "v32_shear": ("+ each training image sheared parallel to the x axis by its own angle in [-10, 10] degrees, as "
                  "RandomAffine(shear=10) draws it", design_v4_model, "Model_3", {"shear": 10.0}),
    # design v33, step 3 (results/validation/v33/PLAN.md): block 2 widened with the spare parameter budget, on seeds
    # 115-138 against v27's and v28's reference runs
    "v33_block2_18first": BLOCK2_18FIRST_ARM,
    "v33_block2_18last": ("block 2's last conv at 18 channels instead of 16, 8->16->16->18 (7,754 parameters)",
                          partial(block2_model, (16, 16, 18)), "Model_3", {}),
    # design v34 (results/validation/v34/PLAN.md): design v33's model (today's Model_3) against design v17's on new
    # seeds 139-150, to see whether v33's validation gain repeats on seeds no choice has seen; it chooses nothing
    "v34_reference": V17_RECIPE_ARM,
    "v34_block2_18first": BLOCK2_18FIRST_ARM,
}
# a run of the key also gives the value's run: the same weights scored without the re-estimation
DERIVED = {"v19_recalibrate_bn": "v19_reference", "v19_check": "v19_check_reference"}
DESIGNS = ("v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10", "v11", "v12", "v13", "v14", "v15", "v16", "v17",
           "v18", "v19", "v20", "v21", "v22", "v23", "v24", "v25", "v26", "v27", "v28", "v29", "v30", "v31",
           "v32", "v33", "v34")
ROUNDS = {arm: arm.split("_")[0] if arm.split("_")[0] in DESIGNS else "v2" for arm in ARMS}
# design v17's recipe, as the rounds after it pin it
V17_PINS = {"ema": 0.999, "scale": 0.2, "elastic": 24.0, "elastic_sigma": 4.0}
# what the recipes were when each round ran, where a later design changed them (Model_3's batch 128 -> 64 in v3,
# bf16 training on the CPU in v5, the EMA in v7, random scaling in v12, elastic distortion in v17; v8 to v18 pin
# the EMA they ran with, every round before v13 pins scaling off, v13 to v18 pin design v12's, every round before
# v18 pins elastic distortion off and v18 pins design v17's, and every round pins label smoothing, clean epochs
# and the cycle's default end, lr / 100, unless its arm sets them; v24 and v25 also pin design v17's rotation, the
# setting they vary, and v26 does too; v27 and v28 pin it and design v17's translation, none, the setting they vary;
# v29 pins those and the hold and momentum cycle it varies, and v30 to v33 pin what v29 does; every round pins
# shear off, which only v32's candidate sets):
# applied before an arm's own overrides, so a rerun or a new seed of an arm repeats the experiment its committed
# runs recorded
RAN_WITH = {round_: {"scale": 0.0, "label_smoothing": 0.0, "elastic": 0.0, "clean_epochs": 0, "recalibrate_bn": 0,
                     "final_lr": 0.0, "shear": 0.0, **pins}
            for round_, pins in {
    "v2": {"batch_size": 128, "bf16": False, "ema": 0.0}, "v3": {"batch_size": 128, "bf16": False, "ema": 0.0},
    "v4": {"bf16": False, "ema": 0.0}, "v5": {"ema": 0.0}, "v6": {"ema": 0.0}, "v7": {"ema": 0.0},
    "v8": {"ema": 0.999}, "v9": {"ema": 0.999}, "v10": {"ema": 0.999}, "v11": {"ema": 0.999},
    "v12": {"ema": 0.999}, "v13": {"ema": 0.999, "scale": 0.2}, "v14": {"ema": 0.999, "scale": 0.2},
    "v15": {"ema": 0.999, "scale": 0.2}, "v16": {"ema": 0.999, "scale": 0.2},
    "v17": {"ema": 0.999, "scale": 0.2},
    **{round_: V17_PINS for round_ in ("v18", "v19", "v20", "v21", "v22", "v23")},
    **{round_: {**V17_PINS, "rotation": 7.0} for round_ in ("v24", "v25", "v26")},
    **{round_: {**V17_PINS, "rotation": 7.0, "translation": 0.0} for round_ in ("v27", "v28")},
    **{round_: {**V17_PINS, "rotation": 7.0, "translation": 0.0, "hold_epochs": 3, "cycle_momentum": True}
       for round_ in ("v29", "v30", "v31", "v32", "v33", "v34")}}.items()}
# rounds whose held-out block rotates with the seed: block seed % 12 of the twelve blocks of 5,000 images
ROTATING_BLOCKS = {"v13", "v14", "v15", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23", "v24", "v25", "v26",
                   "v27", "v28", "v29", "v30", "v31", "v32", "v33", "v34"}


def config(arm: str, seed: int) -> utils.Config:
    """The recipe ``arm`` trains with on ``seed``: evaluated on 5,000 held-out training images (the last 5,000, or
    from v13 on block ``seed % 12``)."""
    _, _, recipe_name, overrides = ARMS[arm]
    block = seed % 12 if ROUNDS[arm] in ROTATING_BLOCKS else -1
    return utils.recipe(recipe_name, seed=seed, holdout=5000, holdout_block=block,
                        **{**RAN_WITH[ROUNDS[arm]], **overrides})


def last_five_means(arm: str, stat=statistics.mean) -> dict[int, float]:
    """An arm's finished runs: seed -> ``stat`` (the mean, or ``min`` for the lowest epoch) of the validation
    accuracy of epochs 11-15."""
    files = (HERE / ROUNDS[arm] / arm).glob("seed*.json")
    return {int(f.stem[4:]): stat(json.loads(f.read_text())["history"]["test_acc"][-5:]) for f in files}


def paired_deltas(arm: str, reference: str, stat=statistics.mean) -> tuple[list[int], list[float]]:
    """The seeds both arms finished, and ``arm`` minus ``reference`` on each: the difference of ``stat`` over
    epochs 11-15 (their mean by default, ``min`` for the lowest epoch)."""
    a, r = last_five_means(arm, stat), last_five_means(reference, stat)
    seeds = sorted(set(a) & set(r))
    return seeds, [a[s] - r[s] for s in seeds]


def compare(arm: str, reference: str, stat=statistics.mean) -> str:
    """``arm`` minus ``reference`` seed by seed, on the seeds both have (:func:`paired_deltas`): the per-seed
    differences, their mean and its SE."""
    seeds, diffs = paired_deltas(arm, reference, stat)
    se = f"{statistics.stdev(diffs) / len(diffs) ** 0.5:.2f}" if len(diffs) > 1 else "–"
    per_seed = ", ".join(f"{s}: {round(d, 2) + 0.0:+.2f}" for s, d in zip(seeds, diffs))  # no "-0.00"
    what = "" if stat is statistics.mean else "lowest epoch, "
    return (f"{arm} - {reference}: {what}paired delta {statistics.mean(diffs):+.2f} (SE {se}, n = {len(diffs)}); "
            f"per seed {per_seed}") if diffs else f"{arm} and {reference} share no finished seed"


def pooled(pairs: list[tuple[str, str]], stat=statistics.mean) -> str:
    """The paired differences of several (arm, reference) pairs taken together, each pair on the seeds both of its
    arms have (design v16 pools v15's and its own): the mean difference of ``stat`` over epochs 11-15 and its SE."""
    diffs, names = [], []
    for arm, reference in pairs:
        seeds, deltas = paired_deltas(arm, reference, stat)
        if not seeds:
            raise ValueError(f"{arm} and {reference} share no finished seed")
        diffs += deltas
        names.append(f"{arm} - {reference} (n = {len(seeds)})")
    if len(diffs) < 2:
        raise ValueError("fewer than two paired seeds in all: no SE")
    what = "" if stat is statistics.mean else "lowest epoch, "
    return (f"{' and '.join(names)}, pooled: {what}paired delta {statistics.mean(diffs):+.2f} "
            f"(SE {statistics.stdev(diffs) / len(diffs) ** 0.5:.2f}, n = {len(diffs)})")


def table(round_: str) -> str:
    """One Markdown row per arm of ``round_`` with finished runs: last-five means per seed, mean +- std, lowest
    epoch, loss."""
    rows = ["| arm | params | seeds | last-five mean per seed | mean ± std | lowest epoch | val. loss |",
            "|---|---|---|---|---|---|---|"]
    for arm in (a for a in ARMS if ROUNDS[a] == round_):
        runs = [json.loads(f.read_text()) for f in sorted((HERE / round_ / arm).glob("seed*.json"),
                                                          key=lambda f: int(f.stem[4:]))]
        if not runs:
            continue
        means = [statistics.mean(r["history"]["test_acc"][-5:]) for r in runs]
        loss = statistics.mean(statistics.mean(r["history"]["test_loss"][-5:]) for r in runs)
        spread = f" ± {statistics.stdev(means):.2f}" if len(means) > 1 else ""
        rows.append(f"| {arm} | {runs[0]['parameters']:,} | {', '.join(str(r['seed']) for r in runs)} | "
                    f"{' / '.join(f'{m:.2f}' for m in means)} | {statistics.mean(means):.2f}{spread} | "
                    f"{min(min(r['history']['test_acc'][-5:]) for r in runs):.2f} | {loss:.4f} |")
    return "\n".join(rows)


def main() -> int:
    if sys.argv[1:2] == ["--table"]:
        round_ = sys.argv[2] if len(sys.argv) > 2 else "v3"
        if round_ not in set(ROUNDS.values()):
            print(f"error: unknown round {round_!r}: use one of {', '.join(sorted(set(ROUNDS.values())))}",
                  file=sys.stderr)
            return 2
        print(table(round_))
        return 0
    if sys.argv[1:2] == ["--compare"]:
        unknown = [a for a in sys.argv[2:4] if a not in ARMS]
        if len(sys.argv) != 4 or unknown:
            print(f"error: --compare takes two arms of: {', '.join(ARMS)}", file=sys.stderr)
            return 2
        print(compare(sys.argv[2], sys.argv[3]))
        print(compare(sys.argv[2], sys.argv[3], min))
        return 0
    if sys.argv[1:2] == ["--pooled"]:
        arms = sys.argv[2:]
        if len(arms) < 4 or len(arms) % 2 or any(a not in ARMS for a in arms):
            print(f"error: --pooled takes pairs ARM REFERENCE of: {', '.join(ARMS)}", file=sys.stderr)
            return 2
        pairs = list(zip(arms[::2], arms[1::2]))
        if len(set(pairs)) < len(pairs):
            print("error: --pooled: a pair is given twice; give each ARM REFERENCE pair once", file=sys.stderr)
            return 2
        try:
            print(pooled(pairs))
            print(pooled(pairs, min))
        except ValueError as error:
            print(f"error: --pooled: {error}", file=sys.stderr)
            return 2
        return 0
    p = train.Parser(description=__doc__.splitlines()[0])
    p.add_argument("arm", choices=ARMS)
    p.add_argument("seed", type=train.SEED)
    p.add_argument("--data-dir", default="data")
    args = p.parse_args()
    what, build, _, _ = ARMS[args.arm]
    cfg = config(args.arm, args.seed)
    out = HERE / ROUNDS[args.arm] / args.arm / f"seed{args.seed}.json"
    if out.exists():
        print(f"{out} exists, skipped")
        return 0
    train.require_data(p, args.data_dir, download=False)  # one line and exit 2, not a traceback
    net = build()
    print(f"arm: {args.arm} ({what}) | {net.__class__.__name__}")
    start = time.perf_counter()
    history = utils.train_model(net, cfg, args.data_dir, download=False)
    seconds = round(time.perf_counter() - start, 2)
    if args.arm in DERIVED:  # first: the candidate's file marks the seed as done
        reference = DERIVED[args.arm]
        scores = {**history.to_dict(), "test_loss": history.uncalibrated_test_loss,
                  "test_acc": history.uncalibrated_test_acc}
        del scores["uncalibrated_test_loss"], scores["uncalibrated_test_acc"]
        utils.write_json_atomic(HERE / ROUNDS[reference] / reference / f"seed{args.seed}.json",
                                record(reference, args.seed, net, seconds, scores,
                                       derived_from=f"{args.arm}/seed{args.seed}.json: the same run, every epoch "
                                                    "scored without the re-estimation"))
    utils.write_json_atomic(out, record(args.arm, args.seed, net, seconds, history.to_dict()))
    return 0


def record(arm: str, seed: int, net, seconds: float, history: dict, **extra) -> dict:
    """One run's JSON: the arm, its recipe, where it ran, its time and its per-epoch history."""
    cfg = config(arm, seed)
    return {"arm": arm, "what": ARMS[arm][0], "seed": seed, "config": vars(cfg), **extra,
            "evaluated_on": utils.evaluated_on(cfg), "device": utils.device_name(utils.get_device()),
            "training_precision": utils.precision_name(utils.training_dtype(cfg, utils.get_device())),
            "parameters": utils.count_parameters(net), "wall_seconds": seconds,
            "summary": utils.last_epochs_summary(history["test_acc"]), "history": history}


if __name__ == "__main__":
    sys.exit(main())
