"""The three MNIST architectures of S7, one per design step.

Every model is built from one helper, :func:`conv_block` (conv -> BN -> ReLU -> dropout), and reads as
stages: ``block1`` -> ``transition1`` -> ``block2`` -> ``gap`` -> ``head``. Each stage's comment gives its
output size and receptive field (RF) for a 28x28 input; ``utils.receptive_field`` computes the same table
and the tests check it against a gradient measurement. Models return logits (use cross-entropy).

Nothing happens at import time.
"""
from __future__ import annotations

import torch
from torch import nn


def conv_block(in_ch: int, out_ch: int, kernel_size: int = 3, padding: int = 0,
               dropout: float = 0.0) -> nn.Sequential:
    """conv -> BatchNorm -> ReLU -> dropout. The conv has no bias: BatchNorm's shift replaces it."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(),
        nn.Dropout(dropout),
    )


class _StagedNet(nn.Module):
    """Shared forward pass; subclasses define the stages in ``__init__``."""

    block1: nn.Module
    transition1: nn.Module
    block2: nn.Module
    gap: nn.Module
    head: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, 1, 28, 28)
        x = self.block1(x)
        x = self.transition1(x)
        x = self.block2(x)
        x = self.gap(x)                # (N, C, 1, 1)
        return self.head(x).flatten(1)  # (N, 10) logits


class Model_1(_StagedNet):
    """Step 1 - the skeleton.

    Target: a lean network with the right structure (conv-BN-ReLU-dropout blocks, max-pool where the RF
    reaches 5, a 1x1 transition, global average pooling instead of a flatten) trained with a plain recipe
    (SGD, constant LR, no augmentation), to measure what the structure alone gives.
    Result and analysis: see README.md, section "Step 1", and ``S7_Step1.ipynb``.
    """

    def __init__(self, dropout: float = 0.05) -> None:
        super().__init__()
        self.block1 = nn.Sequential(
            conv_block(1, 8, dropout=dropout),    # 28->26, RF 3
            conv_block(8, 12, dropout=dropout),   # 26->24, RF 5
        )
        self.transition1 = nn.Sequential(
            nn.MaxPool2d(2),                                   # 24->12, RF 6
            conv_block(12, 8, kernel_size=1, dropout=dropout),  # 12->12, RF 6
        )
        self.block2 = nn.Sequential(
            conv_block(8, 8, dropout=dropout),    # 12->10, RF 10
            conv_block(8, 12, dropout=dropout),   # 10->8,  RF 14
            conv_block(12, 12, dropout=dropout),  # 8->6,   RF 18
        )
        self.gap = nn.AdaptiveAvgPool2d(1)        # 6->1,   RF 28
        self.head = nn.Conv2d(12, 10, 1)          # 1x1 classifier


class Model_2(_StagedNet):
    """Step 2 - capacity where the features are formed.

    Target: same skeleton, more channels in the layers after the transition (where the RF covers digit
    parts) and in the expanding conv of block 1, staying well under 8k parameters.
    Result and analysis: see README.md, section "Step 2", and ``S7_Step2.ipynb``.
    """

    def __init__(self, dropout: float = 0.05) -> None:
        super().__init__()
        self.block1 = nn.Sequential(
            conv_block(1, 8, dropout=dropout),    # 28->26, RF 3
            conv_block(8, 16, dropout=dropout),   # 26->24, RF 5
        )
        self.transition1 = nn.Sequential(
            nn.MaxPool2d(2),                                   # 24->12, RF 6
            conv_block(16, 8, kernel_size=1, dropout=dropout),  # 12->12, RF 6
        )
        self.block2 = nn.Sequential(
            conv_block(8, 16, dropout=dropout),   # 12->10, RF 10
            conv_block(16, 16, dropout=dropout),  # 10->8,  RF 14
            conv_block(16, 16, dropout=dropout),  # 8->6,   RF 18
        )
        self.gap = nn.AdaptiveAvgPool2d(1)        # 6->1,   RF 28
        self.head = nn.Conv2d(16, 10, 1)          # 1x1 classifier


class Model_3(Model_2):
    """Step 3 - the training recipe.

    Target: Model_2's architecture unchanged; the gain comes from the recipe (per-sample rotation of
    +-7 degrees and a OneCycle learning-rate schedule), reaching >= 99.4 % in every one of the last epochs.
    Result and analysis: see README.md, section "Step 3", ``S7_Step3.ipynb`` and ``results/``.
    """
