"""Receptive-field arithmetic against the RF measured with gradients, on nets with every layer kind."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import utils

NETS = {
    "plain 3x3": nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.Conv2d(2, 2, 3)),
    "max-pool": nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3), nn.Conv2d(2, 2, 3)),
    "strided and padded": nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.Conv2d(2, 2, 5, padding=2),
                                        nn.AvgPool2d(3, stride=2), nn.Conv2d(2, 2, 3)),
    "dilated, 1x1": nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2), nn.Conv2d(2, 2, 1), nn.MaxPool2d(2),
                                  nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.1)),
    "depthwise separable": nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, groups=4),
                                         nn.Conv2d(4, 6, 1), nn.Conv2d(6, 6, 3, groups=6)),
}


@pytest.mark.parametrize("name", NETS)
def test_computed_rf_equals_measured_rf(name):
    net = NETS[name]
    for row in utils.receptive_field(net, 64)[1:]:
        assert utils.measured_receptive_field(net, row.layer, 64) == row.rf, row


def test_known_values():
    rows = utils.receptive_field(NETS["max-pool"], 28)
    assert [(r.n, r.jump, r.rf) for r in rows] == [(28, 1, 1), (26, 1, 3), (13, 2, 4), (11, 2, 8), (9, 2, 12)]
    rows = utils.receptive_field(NETS["strided and padded"], 28)
    assert [(r.n, r.jump, r.rf) for r in rows[1:]] == [(14, 2, 3), (14, 2, 11), (6, 4, 15), (4, 4, 23)]


def test_global_average_pool_covers_the_map():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1))
    rows = utils.receptive_field(net, 28)
    assert (rows[-1].n, rows[-1].rf) == (1, 4 + (13 - 1) * 2)
    assert utils.measured_receptive_field(net, "2", 28) == 28


def test_table_has_a_row_per_layer():
    table = utils.rf_table(utils.receptive_field(NETS["plain 3x3"]))
    assert table.count("\n") == 1 + 4 and "| 0 | Conv2d | 3 | 1 | 0 | 26 | 1 | 3 |" in table


def test_depthwise_convs_are_labelled_and_grow_the_rf_like_plain_ones():
    rows = utils.receptive_field(NETS["depthwise separable"], 28)
    assert [r.kind for r in rows[1:]] == ["Conv2d", "MaxPool2d", "Conv2d (depthwise)", "Conv2d", "Conv2d (depthwise)"]
    assert [r.rf for r in rows[1:]] == [3, 4, 8, 8, 12]


def test_same_padding_ceil_mode_and_a_global_max_pool_give_the_sizes_torch_gives():
    """Layers a user's own model may hold: the computed output sizes against a forward pass, at three input sizes
    (an odd size makes ceil_mode round up)."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding="same"), nn.MaxPool2d(2, ceil_mode=True),
                        nn.Conv2d(4, 4, 5, dilation=2, padding="same"), nn.Conv2d(4, 4, 3, stride=2),
                        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), nn.AdaptiveMaxPool2d(1)).eval()
    for size in (28, 27, 25):
        sizes = {}
        for name, m in net.named_modules():
            if name:
                m.register_forward_hook(lambda m, i, out, name=name: sizes.__setitem__(name, out.shape[-1]))
        net(torch.zeros(1, 1, size, size))
        rows = utils.receptive_field(net, size)[1:]
        assert [r.n for r in rows] == [sizes[r.layer] for r in rows], size
        for m in net.modules():
            m._forward_hooks.clear()
    assert [r.rf for r in utils.receptive_field(net)] == [1, 3, 4, 20, 24, 32, 56]


@pytest.mark.parametrize("net, words", [
    (nn.Sequential(nn.Conv2d(1, 2, (5, 1))), "kernel (5, 1) differs per axis"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, stride=(1, 2))), "stride (1, 2) differs per axis"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(2)), "an adaptive pool to 2 has no fixed kernel"),
    (nn.Sequential(nn.Conv2d(1, 2, 5), nn.MaxPool2d(2), nn.Conv2d(2, 2, 5)),
     "would shrink to 0 pixels at input size 12"),
])
def test_layers_it_cannot_compute_are_refused_not_miscounted(net, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        utils.receptive_field(net, 12)
