"""Every S7 model: budget, building blocks, shapes, gradients, receptive field, and no import side effects."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import model
import utils
from conftest import ROOT

MODELS = [model.Model_1, model.Model_2, model.Model_3]


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_under_the_parameter_budget(cls):
    assert utils.count_parameters(cls()) < 8000


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_uses_batchnorm_dropout_and_global_average_pooling(cls):
    kinds = {type(m) for m in cls().modules()}
    assert {nn.BatchNorm2d, nn.Dropout, nn.AdaptiveAvgPool2d} <= kinds
    assert nn.Linear not in kinds  # no flatten into a big fully connected layer


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_every_dropout_module_drops_something(cls):
    """A rate-0 dropout would show in torchsummary and trip graders' checks of the dropout rates."""
    rates = [m.p for m in cls().modules() if isinstance(m, nn.Dropout)]
    assert rates and all(p > 0 for p in rates)


def test_conv_block_without_dropout_has_no_dropout_module():
    assert [type(m) for m in model.conv_block(4, 8)] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert type(model.conv_block(4, 8, dropout=0.1)[-1]) is nn.Dropout


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_draws_one_number_per_element_at_any_rate(dtype):
    """Design v30's candidates (dropout 0.01, 0.05) and its reference (0.02) draw the same random stream, as its
    README says: at one seed a lower rate's dropped elements are a subset of a higher rate's, and the generator
    stands at the same place afterwards (in float32, and in bf16 as under the CPU's autocast)."""
    x = torch.ones(64, 16, 10, 10, dtype=dtype)
    dropped, after = [], []
    for rate in (0.01, 0.02, 0.05):
        torch.manual_seed(0)
        dropped.append(nn.Dropout(rate).train()(x) == 0)
        after.append(torch.rand(8))
    assert all(low.le(high).all() for low, high in zip(dropped, dropped[1:]))
    assert dropped[0].sum() < dropped[1].sum() < dropped[2].sum()
    assert all(torch.equal(a, after[0]) for a in after)


def test_block1_dropout_false_removes_only_block_1s_dropout():
    def dropout_parents(net):
        return sorted(name.split(".")[0] for name, m in net.named_modules() if isinstance(m, nn.Dropout))

    layers = ((8, 16), 8, (16, 16, 16))
    with_all = model.StagedNet(*layers, dropout=0.02)
    without = model.StagedNet(*layers, dropout=0.02, block1_dropout=False)
    assert dropout_parents(with_all) == ["block1"] * 2 + ["block2"] * 3 + ["transition1"]
    assert dropout_parents(without) == ["block2"] * 3 + ["transition1"]
    assert with_all.state_dict().keys() == without.state_dict().keys()  # dropout holds no weights


def test_head_hidden_is_two_1x1_convs_after_the_pool():
    net = model.StagedNet((8, 16), 8, (16, 16, 16), dropout=0.02, head_hidden=24)
    assert [type(m) for m in net.head] == [nn.Conv2d, nn.ReLU, nn.Conv2d]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in net.head[::2]] == [(16, 24, (1, 1)),
                                                                                        (24, 10, (1, 1))]
    plain = model.StagedNet((8, 16), 8, (16, 16, 16), dropout=0.02)
    assert utils.count_parameters(net) - utils.count_parameters(plain) == (16 * 24 + 24 + 24 * 10 + 10) - (16 * 10 + 10)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_block1_padding_keeps_28x28_and_the_weights_and_receptive_fields():
    layers = ((8, 16), 8, (16, 16, 16))
    plain = model.StagedNet(*layers, dropout=0.02, block1_dropout=False)
    padded = model.StagedNet(*layers, dropout=0.02, block1_dropout=False, block1_padding=1)
    assert padded.block1[0][0].padding == (1, 1) and padded.block1[1][0].padding == (0, 0)
    assert padded.state_dict().keys() == plain.state_dict().keys()
    assert utils.count_parameters(padded) == utils.count_parameters(plain) == 7442
    conv_sizes = [r.n for r in utils.receptive_field(padded) if r.kind == "Conv2d" and r.kernel == 3]
    assert conv_sizes == [28, 26, 11, 9, 7]
    before_gap = [r.rf for r in utils.receptive_field(padded)][:-2]
    assert before_gap == [r.rf for r in utils.receptive_field(plain)][:-2]
    assert utils.receptive_field(padded)[-1].rf == 30  # the GAP spans 7x7 positions: the whole image, as before
    assert padded.block1(torch.randn(2, 1, 28, 28)).shape == (2, 16, 26, 26)
    assert padded(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_outputs_log_probabilities_and_every_parameter_learns(cls):
    torch.manual_seed(0)
    net = cls()
    out = net(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    torch.testing.assert_close(out.exp().sum(1), torch.ones(4))
    nn.functional.nll_loss(out, torch.arange(4)).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_nll_loss_and_cross_entropy_give_the_same_loss_and_gradient(cls):
    """The course's loops use F.nll_loss, others F.cross_entropy: both must train the models identically."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    grads = []
    for loss_fn in (nn.functional.nll_loss, nn.functional.cross_entropy):
        torch.manual_seed(1)
        net = cls().eval()  # eval: no dropout draws, so both passes see the same network
        loss = loss_fn(net(x), y)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in net.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = grads
    torch.testing.assert_close(loss_a, loss_b)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_receptive_field_table_matches_gradient_measurement(cls):
    net = cls()
    rows = utils.receptive_field(net)
    assert rows[-1].rf >= 28  # the classifier sees the whole digit
    for row in rows[1:]:
        if row.kind == "AdaptiveAvgPool2d" or row.layer == "head":
            assert utils.measured_receptive_field(net, row.layer, 28) == min(row.rf, 28)
        else:
            assert utils.measured_receptive_field(net, row.layer, row.rf + 30) == row.rf, row.layer


def test_import_has_no_side_effects(tmp_path):
    code = "import model, utils, train"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and list(tmp_path.iterdir()) == []


def test_summary_runs_on_a_model_in_train_mode_without_touching_it(capsys):
    net = model.Model_3()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    utils.summary(net)
    assert f"Total params: {utils.count_parameters(net):,}" in capsys.readouterr().out
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
