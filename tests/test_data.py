"""Data loading and the two input pipelines, on small MNIST-format files written by conftest."""
from __future__ import annotations

import math
import re
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

import utils
from conftest import synthetic_digits, write_idx


def test_load_mnist_reads_idx_files(mnist_root):
    ds = utils.load_mnist(mnist_root, train=True, download=False)
    images, labels = synthetic_digits(600, seed=1)
    assert len(ds) == 600
    assert torch.equal(ds.data, torch.from_numpy(images))
    assert torch.equal(ds.targets, torch.from_numpy(labels).long())


def test_missing_data_says_where_and_what(tmp_path):
    with pytest.raises(utils.DataError) as info:
        utils.load_mnist(tmp_path / "nowhere", download=False)
    message = str(info.value)
    assert "\n" not in message
    assert str((tmp_path / "nowhere").resolve()) in message
    assert "MNIST/raw" in message and "--data-dir" in message


def broken_copy(root, case: str):
    """An MNIST folder like ``mnist_root`` (600 train, 200 test images) whose test files are broken as ``case``."""
    write_idx(root, True, *synthetic_digits(600, seed=1))
    images, labels = synthetic_digits(200, seed=2)
    raw = root / "MNIST" / "raw"
    if case == "fewer labels":  # a labels file that is whole, of 100 labels, beside 200 images
        write_idx(root, False, images, labels)
        (raw / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, 100) + labels[:100].tobytes())
    elif case == "label 200":
        labels[7] = 200
        write_idx(root, False, images, labels)
    elif case == "14x56 images":
        write_idx(root, False, images.reshape(200, 14, 56), labels)
    elif case == "truncated":
        write_idx(root, False, images, labels)
        (raw / "t10k-images-idx3-ubyte").write_bytes((raw / "t10k-images-idx3-ubyte").read_bytes()[:-16])
    elif case == "swapped":  # the labels file where the images file should be, and the other way round
        write_idx(root, False, images, labels)
        img, lbl = raw / "t10k-images-idx3-ubyte", raw / "t10k-labels-idx1-ubyte"
        a, b = img.read_bytes(), lbl.read_bytes()
        img.write_bytes(b)
        lbl.write_bytes(a)
    return root


@pytest.mark.parametrize("case, words", [
    ("fewer labels", "is not intact: its test files hold 200 images but 100 labels"),
    ("label 200", "is not intact: its test files hold labels from 0 to 200, not 0 to 9"),
    ("14x56 images", "is not intact: its test files hold images of (14, 56) pixels, not (28, 28)"),
    ("truncated", "cannot be read ("),
    ("swapped", "cannot be read ("),
])
def test_broken_files_say_so_instead_of_loading_a_wrong_split(tmp_path, case, words):
    """Files that are there but broken are named as such (not 'not found', which would send a user looking for
    another folder), and no split loads with images and labels that do not belong together."""
    root = broken_copy(tmp_path, case)
    assert len(utils.load_mnist(root, train=True, download=False)) == 600  # the intact split still loads
    with pytest.raises(utils.DataError) as info:
        utils.load_mnist(root, train=False, download=False)
    message = str(info.value)
    assert words in message and "\n" not in message, message
    assert str((root / "MNIST" / "raw").resolve()) in message and "not found" not in message


def test_a_failed_downloads_reason_keeps_the_network_error():
    """torchvision's message names the file on its first line and the network error on its last."""
    err = RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://a/, got:\n<urlopen error "
                       "[Errno -2] Name or service not known>\n")
    assert utils._reason(err) == ("Error downloading train-images-idx3-ubyte.gz: ... <urlopen error [Errno -2] "
                                  "Name or service not known>")
    assert utils._reason(AssertionError()) == "AssertionError"
    assert utils._reason(ValueError("one line")) == "one line"


@pytest.mark.parametrize("kind, workers", [("device", None), ("conventional", 0), ("conventional", 2)])
def test_plotting_a_batch_leaves_the_run_that_follows_unchanged(mnist_root, monkeypatch, kind, workers):
    """utils.plot_batch draws a batch (a DeviceLoader: a whole epoch's permutation and augmentation); a learner who
    plots before training must get the same run as without the plot."""
    monkeypatch.setattr(utils, "_image_grid", lambda images, titles: None)  # the drawing itself is not tested

    def first_epoch(plot: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)  # the conventional pipeline's transforms draw from torch's global generator
        train, _ = utils.make_loaders(mnist_root, kind, batch_size=100, rotation=10, seed=3, download=False,
                                      scale=0.1, elastic=10.0, num_workers=workers)  # 2: persistent workers
        if plot:
            utils.plot_batch(train)
        return [x for x, _ in train]

    plotted, plain = first_epoch(True), first_epoch(False)
    assert len(plotted) == len(plain) == 6
    assert all(torch.equal(a, b) for a, b in zip(plotted, plain))


@pytest.mark.parametrize("name, value, rule", [
    ("rotation", -5.0, ">= 0"), ("translation", 2.0, "in [0, 1]"), ("scale", 1.2, "in [0, 1)"),
    ("scale", 1.0, "in [0, 1)"), ("shear", -5.0, ">= 0"), ("elastic", -1.0, ">= 0"),
])
def test_both_pipelines_refuse_the_same_out_of_range_augmentation(mnist_root, name, value, rule):
    """The device pipeline used to take a scale of 1.2 (factors down to -0.2: blank or turned images, a 6 that
    looks like a 9 under label 6) or shifts of twice the image, where torchvision refuses them."""
    for pipeline in ("device", "conventional"):
        with pytest.raises(ValueError, match=re.escape(f"{name} must be {rule}, got {value}")):
            utils.make_loaders(mnist_root, pipeline, download=False, **{name: value})


def id_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float images whose every pixel holds the sample's index; labels = index % 10."""
    ids = torch.arange(n, dtype=torch.float32)
    return ids.view(n, 1, 1, 1).expand(n, 1, 28, 28).clone(), torch.arange(n) % 10


def epoch_ids(loader) -> list[torch.Tensor]:
    return [x[:, 0, 0, 0].long() for x, _ in loader]


def test_device_loader_sees_every_sample_once_with_a_partial_last_batch():
    loader = utils.DeviceLoader(*id_images(1000), batch_size=128, shuffle=True, seed=0)
    batches = epoch_ids(loader)
    assert len(loader) == len(batches) == math.ceil(1000 / 128)
    assert [len(b) for b in batches] == [128] * 7 + [1000 - 7 * 128]
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))


def test_device_loader_reshuffles_each_epoch_and_keeps_labels():
    loader = utils.DeviceLoader(*id_images(500), batch_size=100, shuffle=True, seed=0)
    first, second = torch.cat(epoch_ids(loader)), torch.cat(epoch_ids(loader))
    assert not torch.equal(first, second)
    assert not torch.equal(first, torch.arange(500))
    for x, y in loader:
        assert torch.equal(x[:, 0, 0, 0].long() % 10, y)


def test_device_loader_without_shuffle_keeps_order():
    loader = utils.DeviceLoader(*id_images(250), batch_size=100, shuffle=False)
    assert torch.equal(torch.cat(epoch_ids(loader)), torch.arange(250))


def test_device_loader_is_reproducible_from_its_seed():
    images, labels = synthetic_digits(300, seed=5)
    runs = []
    for _ in range(2):
        loader = utils.DeviceLoader(torch.from_numpy(images), torch.from_numpy(labels).long(), batch_size=64,
                                    rotation=15, seed=7)
        runs.append([x for epoch in range(2) for x, _ in loader])
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    other = utils.DeviceLoader(torch.from_numpy(images), torch.from_numpy(labels).long(), batch_size=64,
                               rotation=15, seed=8)
    assert not torch.equal(next(iter(other))[0], runs[0][0])


def rotate_calls(monkeypatch, loader, fields: bool = False,
                 with_shears: bool = False) -> list[tuple[torch.Tensor | None, ...]]:
    """One epoch of ``loader``, with every ``utils.rotate`` call it makes recorded: (angles, shifts, scales), and
    with ``fields``, the displacement field too, and with ``with_shears``, the shear angles last."""
    calls = []
    real_rotate = utils.rotate

    def spy(images, degrees, shifts=None, scales=None, displacement=None, shears=None):
        recorded = (degrees, shifts, scales) + ((displacement,) if fields else ()) + ((shears,) if with_shears else ())
        calls.append(tuple(None if t is None else t.clone() for t in recorded))
        return real_rotate(images, degrees, shifts, scales, displacement, shears)

    with monkeypatch.context() as patch:
        patch.setattr(utils, "rotate", spy)
        list(loader)
    return calls


def test_device_loader_draws_one_angle_per_sample_within_range(monkeypatch):
    calls = rotate_calls(monkeypatch, utils.DeviceLoader(*id_images(2000), batch_size=500, rotation=7.0, seed=0))
    assert all(shifts is None and scales is None for _, shifts, scales in calls)  # rotation only
    angles = torch.cat([a for a, _, _ in calls])
    assert len(angles) == 2000
    assert angles.abs().max() <= 7.0 and angles.max() > 6.5 and angles.min() < -6.5
    assert len(torch.unique(angles)) > 1990  # per sample, not per batch


def test_rotation_keeps_the_background_black():
    images = utils.normalize(torch.from_numpy(synthetic_digits(8, seed=3)[0]))
    turned = utils.rotate(images, torch.full((8,), 45.0))
    assert turned.min() >= utils.BLACK - 1e-5
    assert torch.allclose(turned[..., 0, 0], torch.full((8, 1), utils.BLACK), atol=1e-5)  # corners came from outside
    empty = torch.full((2, 1, 28, 28), utils.BLACK)
    assert torch.allclose(utils.rotate(empty, torch.tensor([30.0, -30.0])), empty, atol=1e-5)


@pytest.mark.parametrize("angle", [-7.0, 3.0, 10.0, 30.0])
def test_both_pipelines_rotate_the_same_way(angle):
    image = synthetic_digits(1, seed=4)[0][0]
    conventional = utils.conventional_transform(0.0)(
        TF.rotate(Image.fromarray(image), angle, interpolation=InterpolationMode.BILINEAR, fill=0))
    device = utils.rotate(utils.normalize(torch.from_numpy(image[None])), torch.tensor([angle]))[0]
    mirrored = utils.rotate(utils.normalize(torch.from_numpy(image[None])), torch.tensor([-angle]))[0]
    diff = (conventional - device).abs()
    assert diff.mean() < 0.02 and diff.max() < 0.15  # PIL rounds to uint8 before normalising
    assert (conventional - mirrored).abs().mean() > 10 * diff.mean()


@pytest.mark.parametrize("angle, dx, dy", [(0.0, 3, 0), (0.0, 0, -2), (7.0, -3, 2), (-5.0, 1, 3)])
def test_both_pipelines_shift_the_same_way(angle, dx, dy):
    image = synthetic_digits(1, seed=5)[0][0]
    # TF.affine (which RandomAffine calls) turns clockwise, TF.rotate and utils.rotate counter-clockwise; the
    # angle is drawn from a symmetric range, so the two pipelines draw the same transforms
    conventional = utils.conventional_transform(0.0)(
        TF.affine(Image.fromarray(image), -angle, [dx, dy], 1.0, [0.0, 0.0],
                  interpolation=InterpolationMode.BILINEAR, fill=0))
    x = utils.normalize(torch.from_numpy(image[None]))
    device = utils.rotate(x, torch.tensor([angle]), torch.tensor([[dx, dy]]))[0]
    wrong_way = utils.rotate(x, torch.tensor([angle]), torch.tensor([[-dx, -dy]]))[0]
    diff = (conventional - device).abs()
    assert diff.mean() < 0.02 and diff.max() < 0.15  # PIL rounds to uint8 before normalising
    assert (conventional - wrong_way).abs().mean() > 5 * diff.mean()
    if angle == 0.0:  # a whole-pixel shift moves pixels exactly and brings black in at the edge
        expected = torch.full_like(x[0], utils.BLACK)
        expected[:, max(dy, 0):28 + min(dy, 0), max(dx, 0):28 + min(dx, 0)] = \
            x[0][:, max(-dy, 0):28 + min(-dy, 0), max(-dx, 0):28 + min(-dx, 0)]
        assert torch.allclose(device, expected, atol=1e-5)


def test_device_loader_draws_whole_pixel_shifts_per_sample_within_range(monkeypatch):
    calls = rotate_calls(monkeypatch, utils.DeviceLoader(*id_images(2000), batch_size=500, rotation=7.0,
                                                         translation=0.1, seed=0))
    assert all(scales is None for _, _, scales in calls)
    angles, shifts = torch.cat([a for a, _, _ in calls]), torch.cat([s for _, s, _ in calls])
    assert shifts.shape == (2000, 2) and torch.equal(shifts, shifts.round())
    assert shifts.abs().max() == 3  # round(uniform(-2.8, 2.8))
    for axis in (0, 1):
        counts = torch.bincount((shifts[:, axis] + 3).long(), minlength=7)
        assert (counts > 0).all() and counts[0] < counts[3] / 2  # +-3 only from (2.5, 2.8]
    assert angles.abs().max() <= 7.0 and len(torch.unique(angles)) > 1990


def test_shifts_without_rotation_still_shift():
    loader = utils.DeviceLoader(*id_images(64), batch_size=64, shuffle=False, translation=0.1, seed=1)
    plain = utils.DeviceLoader(*id_images(64), batch_size=64, shuffle=False, seed=1)
    assert not torch.allclose(next(iter(loader))[0], next(iter(plain))[0])


def test_conventional_transform_shifts_with_random_affine():
    affine = utils.conventional_transform(7.0, 0.1).transforms[0]
    assert isinstance(affine, transforms.RandomAffine)
    assert affine.degrees == [-7.0, 7.0] and affine.translate == (0.1, 0.1)
    assert affine.fill == 0 and affine.interpolation == InterpolationMode.BILINEAR


def centroid_distance(image: torch.Tensor) -> float:
    """How far the ink's centre of mass lies from the image centre, in pixels (linear in the pixels, so
    bilinear blur does not move it)."""
    ink = image[0] - utils.BLACK
    y, x = torch.meshgrid(torch.arange(28.0) - 13.5, torch.arange(28.0) - 13.5, indexing="ij")
    return math.hypot((ink * x).sum() / ink.sum(), (ink * y).sum() / ink.sum())


@pytest.mark.parametrize("angle, scale, dx, dy", [(0.0, 1.2, 0, 0), (0.0, 0.8, 0, 0), (7.0, 1.1, 0, 0),
                                                   (-5.0, 0.9, 2, -1)])
def test_both_pipelines_scale_the_same_way(angle, scale, dx, dy):
    image = synthetic_digits(1, seed=6)[0][0]
    conventional = utils.conventional_transform(0.0)(
        TF.affine(Image.fromarray(image), -angle, [dx, dy], scale, [0.0, 0.0],
                  interpolation=InterpolationMode.BILINEAR, fill=0))
    x = utils.normalize(torch.from_numpy(image[None]))
    shifts = torch.tensor([[dx, dy]]) if dx or dy else None
    device = utils.rotate(x, torch.tensor([angle]), shifts, torch.tensor([scale]))[0]
    inverse = utils.rotate(x, torch.tensor([angle]), shifts, torch.tensor([1 / scale]))[0]
    diff = (conventional - device).abs()
    assert diff.mean() < 0.02 and diff.max() < 0.2  # PIL rounds to uint8 before normalising
    assert (conventional - inverse).abs().mean() > 5 * diff.mean()
    if shifts is None:  # > 1 enlarges about the centre: an off-centre blob moves out by the factor
        blob = torch.zeros(1, 28, 28, dtype=torch.uint8)
        blob[0, 5:8, 18:21] = 255
        moved = utils.rotate(utils.normalize(blob), torch.tensor([angle]), None, torch.tensor([scale]))[0]
        assert centroid_distance(moved) / centroid_distance(utils.normalize(blob)[0]) == pytest.approx(scale,
                                                                                                      rel=0.01)


def test_device_loader_draws_one_scale_factor_per_sample_within_range_and_keeps_the_angles(monkeypatch):
    scaled = rotate_calls(monkeypatch, utils.DeviceLoader(*id_images(2000), batch_size=500, rotation=7.0, scale=0.1,
                                                          seed=0))
    seen = rotate_calls(monkeypatch, utils.DeviceLoader(*id_images(2000), batch_size=500, rotation=7.0, seed=0))
    scales = torch.cat([s for _, _, s in scaled])
    assert all(shifts is None for _, shifts, _ in scaled)
    assert len(scales) == 2000 and len(torch.unique(scales)) > 1990  # per sample, not per batch
    assert scales.min() >= 0.9 and scales.max() <= 1.1 and scales.min() < 0.905 and scales.max() > 1.095
    # the factors are drawn after the angles: switching scaling on leaves the angles a seed draws as they were
    assert torch.equal(torch.cat([a for a, _, _ in scaled]), torch.cat([a for a, _, _ in seen]))
    assert all(s is None for _, _, s in seen)


def test_scaling_without_rotation_still_scales():
    loader = utils.DeviceLoader(*id_images(64), batch_size=64, shuffle=False, scale=0.1, seed=1)
    images = next(iter(loader))[0]
    plain = next(iter(utils.DeviceLoader(*id_images(64), batch_size=64, shuffle=False, seed=1)))[0]
    # id images are flat, so scaling only shows where the image shrinks and black comes in at the border
    assert not torch.allclose(images, plain)


def test_conventional_transform_scales_with_random_affine():
    affine = utils.conventional_transform(7.0, 0.0, 0.1).transforms[0]
    assert isinstance(affine, transforms.RandomAffine)
    assert affine.degrees == [-7.0, 7.0] and affine.translate is None and affine.scale == (0.9, 1.1)
    assert affine.fill == 0 and affine.interpolation == InterpolationMode.BILINEAR
    both = utils.conventional_transform(7.0, 0.1, 0.2).transforms[0]
    assert both.translate == (0.1, 0.1) and both.scale == (0.8, 1.2)
    assert utils.conventional_transform(7.0, 0.1).transforms[0].scale is None


@pytest.mark.parametrize("sigma", [4.0, 2.5, 1.2, 1.0])  # 1.2: int(8 sigma + 1) = 10 taps, made odd
def test_elastic_field_is_elastic_transforms_blurred_noise(sigma):
    """The field from given noise is what ``ElasticTransform.get_params`` makes of the same noise: each channel
    Gaussian-blurred (its kernel size, reflect padding) and scaled by alpha / size, x first."""
    noise = torch.rand(3, 2, 28, 20, generator=torch.Generator().manual_seed(0)) * 2 - 1
    size = len(utils.gaussian_kernel1d(sigma))
    assert size == int(8 * sigma + 1) + (int(8 * sigma + 1) % 2 == 0) and size % 2 == 1
    # torchvision's own draw: its noise is torch.rand(1, 1, H, W) * 2 - 1 for x, then the same for y
    torch.manual_seed(5)
    drawn = transforms.ElasticTransform.get_params([24.0, 24.0], [sigma, sigma], [28, 20])
    torch.manual_seed(5)
    same_noise = torch.cat([torch.rand(1, 1, 28, 20) * 2 - 1, torch.rand(1, 1, 28, 20) * 2 - 1], 1)
    assert torch.allclose(utils.elastic_field(same_noise, 24.0, sigma), drawn, atol=1e-6)
    field = utils.elastic_field(noise, 24.0, sigma)
    assert field.shape == (3, 28, 20, 2)
    blurred = TF.gaussian_blur(noise, [size, size], [sigma, sigma])
    expected = torch.stack([blurred[:, 0] * 24.0 / 20, blurred[:, 1] * 24.0 / 28], -1)
    assert torch.allclose(field, expected, atol=1e-6)
    assert not torch.allclose(field, expected.flip(-1), atol=1e-3)


def test_elastic_field_refuses_a_blur_wider_than_the_image():
    with pytest.raises(ValueError, match="too large"):
        utils.elastic_field(torch.zeros(1, 2, 28, 28), 24.0, 4.0 * 28)


@pytest.mark.parametrize("angle, scale, dx, dy, shear", [(0.0, 1.0, 0, 0, 0.0), (6.0, 1.15, 0, 0, 0.0),
                                                          (-4.0, 0.85, 0, 0, 0.0), (5.0, 1.1, 2, -3, 0.0),
                                                          (-6.0, 1.05, 1, 2, 10.0)])
def test_both_pipelines_distort_the_same_way(angle, scale, dx, dy, shear):
    """One image, one angle, factor, shift and shear, and one field through both pipelines. The conventional pipeline
    resamples twice (RandomAffine, then ElasticTransform): the device pipeline's affine map followed by the same
    field as a second resampling matches it up to PIL's rounding, and the field negated is far off. The device
    pipeline's one resampling of the composed map differs from that only by the second interpolation's blur (nil
    when the affine map is the identity)."""
    image = synthetic_digits(1, seed=7)[0][0]
    noise = torch.rand(1, 2, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    field = utils.elastic_field(noise, 34.0, 4.0)
    affine = TF.affine(Image.fromarray(image), -angle, [dx, dy], scale, [shear, 0.0],
                       interpolation=InterpolationMode.BILINEAR, fill=0)
    conventional = utils.conventional_transform(0.0)(
        TF.elastic_transform(affine, field, InterpolationMode.BILINEAR, 0))
    x = utils.normalize(torch.from_numpy(image[None]))
    shifts = torch.tensor([[dx, dy]]) if dx or dy else None
    shears = torch.tensor([shear]) if shear else None
    turned = utils.rotate(x, torch.tensor([angle]), shifts, torch.tensor([scale]), None, shears)
    twice = utils.rotate(turned, torch.tensor([0.0]), None, None, field)[0]
    negated = utils.rotate(turned, torch.tensor([0.0]), None, None, -field)[0]
    diff = (conventional - twice).abs().mean()
    assert diff < 0.01 and (conventional - negated).abs().mean() > 10 * diff
    once = utils.rotate(x, torch.tensor([angle]), shifts, torch.tensor([scale]), field, shears)[0]
    assert (conventional - once).abs().mean() < (0.005 if angle == 0 and scale == 1 else 0.08)


@pytest.mark.parametrize("angle, scale", [(0.0, 1.0), (20.0, 1.0), (0.0, 0.8), (-7.0, 1.2)])
def test_a_constant_field_shifts_the_affine_output(angle, scale):
    """The one-resampling composition, checked exactly: a field that is the same d everywhere samples the affine
    output at p + d, i.e. moves the turned and scaled image by -d, which is ``rotate``'s shift applied after the
    turn and the scaling (d in grid units: size / 2 pixels per unit)."""
    x = utils.normalize(torch.from_numpy(synthetic_digits(1, seed=8)[0]))
    d = torch.tensor([0.25, -0.125])  # the image moves 3.5 px left and 1.75 px down
    field = d.expand(1, 28, 28, 2)
    composed = utils.rotate(x, torch.tensor([angle]), None, torch.tensor([scale]), field)
    shifted = utils.rotate(x, torch.tensor([angle]), -(d * 14).view(1, 2), torch.tensor([scale]))
    assert torch.allclose(composed, shifted, atol=1e-5)
    assert not torch.allclose(composed, utils.rotate(x, torch.tensor([angle]), (d * 14).view(1, 2),
                                                     torch.tensor([scale])), atol=1e-2)


def test_device_loader_draws_one_elastic_field_per_sample_after_the_other_draws(monkeypatch):
    loader = utils.DeviceLoader(*id_images(1000), batch_size=250, rotation=7.0, scale=0.2, elastic=24.0, seed=0)
    distorted = rotate_calls(monkeypatch, loader, fields=True)
    plain = rotate_calls(monkeypatch, utils.DeviceLoader(*id_images(1000), batch_size=250, rotation=7.0, scale=0.2,
                                                         seed=0), fields=True)
    fields = torch.cat([f for *_, f in distorted])
    assert fields.shape == (1000, 28, 28, 2) and all(f is None for *_, f in plain)
    assert len(torch.unique(fields[:, 0, 0, 0])) == 1000  # per sample, not per batch
    # about 0.6 px per axis (standard deviation) at alpha 24, sigma 4 (2 / 28 grid units per pixel); no drift
    pixels = fields * 14
    assert 0.5 < pixels.std() < 0.7 and pixels.mean().abs() < 0.1
    # the noise comes after the epoch's other draws: the angles and factors are those of a run without it
    for with_field, without in zip(distorted, plain):
        assert torch.equal(with_field[0], without[0]) and torch.equal(with_field[2], without[2])
    again = rotate_calls(monkeypatch, utils.DeviceLoader(*id_images(1000), batch_size=250, rotation=7.0, scale=0.2,
                                                         elastic=24.0, seed=0), fields=True)
    assert torch.equal(torch.cat([f for *_, f in again]), fields)  # seeded
    with pytest.raises(ValueError, match="elastic_sigma"):
        utils.DeviceLoader(*id_images(10), elastic=24.0, elastic_sigma=0.0)


@pytest.mark.parametrize("angle, shear, scale, dx, dy", [(0.0, 10.0, 1.0, 0, 0), (0.0, -15.0, 1.0, 0, 0),
                                                          (7.0, 10.0, 1.1, 0, 0), (-5.0, 8.0, 0.9, 2, -1)])
def test_both_pipelines_shear_the_same_way(angle, shear, scale, dx, dy):
    """An x-shear, alone and with a turn, a factor and a shift, as TF.affine (which RandomAffine calls) applies
    it: the device pipeline matches it up to PIL's rounding; the opposite shear, or none, is far off."""
    image = synthetic_digits(1, seed=8)[0][0]
    conventional = utils.conventional_transform(0.0)(
        TF.affine(Image.fromarray(image), -angle, [dx, dy], scale, [shear, 0.0],
                  interpolation=InterpolationMode.BILINEAR, fill=0))
    x = utils.normalize(torch.from_numpy(image[None]))
    shifts = torch.tensor([[dx, dy]]) if dx or dy else None

    def device(shears):
        return utils.rotate(x, torch.tensor([angle]), shifts, torch.tensor([scale]), None, shears)[0]

    diff = (conventional - device(torch.tensor([shear]))).abs()
    assert diff.mean() < 0.01 and diff.max() < 0.15  # PIL rounds to uint8 before normalising
    assert (conventional - device(torch.tensor([-shear]))).abs().mean() > 10 * diff.mean()
    assert (conventional - device(None)).abs().mean() > 10 * diff.mean()


def test_a_positive_shear_moves_the_rows_below_the_centre_to_the_left():
    blob = torch.zeros(1, 28, 28, dtype=torch.uint8)
    below, above = blob.clone(), blob.clone()
    below[0, 20:23, 13:16] = 255  # centred on x = 14, y = 21: 7.5 rows below the image's centre (13.5)
    above[0, 5:8, 13:16] = 255    # y = 6: 7.5 rows above it

    def centre_x(image: torch.Tensor) -> float:
        weights = (utils.rotate(utils.normalize(image), torch.zeros(1), None, None, None, torch.tensor([10.0]))[0, 0]
                   - utils.BLACK).clamp(min=0)
        return float((weights.sum(0) * torch.arange(28)).sum() / weights.sum())

    moved = math.tan(math.radians(10)) * 7.5  # 1.32 px
    assert centre_x(below) == pytest.approx(14 - moved, abs=0.02)
    assert centre_x(above) == pytest.approx(14 + moved, abs=0.02)


def test_device_loader_draws_one_shear_per_sample_within_range_after_the_other_draws(monkeypatch):
    def calls(**shear):
        loader = utils.DeviceLoader(*id_images(2000), batch_size=500, rotation=7.0, scale=0.1, elastic=24.0, seed=0,
                                    **shear)
        return rotate_calls(monkeypatch, loader, fields=True, with_shears=True)

    sheared, plain = calls(shear=10.0), calls()
    shears = torch.cat([c[-1] for c in sheared])
    assert len(shears) == 2000 and len(torch.unique(shears)) > 1990  # per sample, not per batch
    assert shears.min() >= -10 and shears.max() <= 10 and shears.min() < -9.9 and shears.max() > 9.9
    assert all(c[-1] is None for c in plain)
    # drawn after the angles and factors: switching shear on leaves them as a seed draws them without it
    for with_shear, without in zip(sheared, plain):
        assert torch.equal(with_shear[0], without[0]) and torch.equal(with_shear[2], without[2])
    assert torch.equal(torch.cat([c[-1] for c in calls(shear=10.0)]), shears)  # seeded
    images = next(iter(utils.DeviceLoader(*id_images(64), batch_size=64, shuffle=False, shear=10.0, seed=1)))[0]
    flat = next(iter(utils.DeviceLoader(*id_images(64), batch_size=64, shuffle=False, seed=1)))[0]
    assert not torch.allclose(images, flat)  # shear alone augments (black comes in at the corners)


def test_conventional_transform_shears_with_random_affine():
    affine = utils.conventional_transform(7.0, 0.0, 0.2, 24.0, 4.0, 10.0).transforms[0]
    assert isinstance(affine, transforms.RandomAffine)
    assert affine.shear == [-10.0, 10.0] and affine.scale == (0.8, 1.2) and affine.degrees == [-7.0, 7.0]
    assert isinstance(utils.conventional_transform(0.0, shear=5.0).transforms[0], transforms.RandomAffine)
    assert utils.conventional_transform(7.0, 0.0, 0.2).transforms[0].shear is None


def test_conventional_transform_appends_elastic_transform_after_the_affine_step():
    steps = utils.conventional_transform(7.0, 0.0, 0.2, 48.0, 3.0).transforms
    assert isinstance(steps[0], transforms.RandomAffine) and isinstance(steps[1], transforms.ElasticTransform)
    assert steps[1].alpha == [48.0, 48.0] and steps[1].sigma == [3.0, 3.0]
    assert steps[1].fill in (0, [0.0]) and steps[1].interpolation == InterpolationMode.BILINEAR
    plain = utils.conventional_transform(7.0, 0.0, 0.2).transforms
    assert not any(isinstance(t, transforms.ElasticTransform) for t in plain)


def first_batch(mnist_root, pipeline: str, **augment) -> torch.Tensor:
    """The first training batch of a loader built with ``augment``, the global RNG (which torchvision's transforms
    draw from) seeded the same way each time."""
    train, _ = utils.make_loaders(mnist_root, pipeline, batch_size=100, rotation=7.0, scale=0.2, seed=0,
                                  download=False, holdout=100, **augment)
    torch.manual_seed(0)
    return next(iter(train))[0]


@pytest.mark.parametrize("pipeline", ["conventional", "device"])
def test_both_pipelines_distort_end_to_end_with_the_sigma_asked_for(mnist_root, pipeline):
    """Through make_loaders: the same seed gives the same batch twice; the distortion changes it, and so does its
    sigma, so neither setting is lost on the way to the loader."""
    plain = first_batch(mnist_root, pipeline)
    assert torch.equal(plain, first_batch(mnist_root, pipeline))
    distorted = first_batch(mnist_root, pipeline, elastic=24.0)
    assert distorted.shape == (100, 1, 28, 28) and torch.isfinite(distorted).all()
    assert not torch.allclose(distorted, plain, atol=1e-3)
    assert not torch.allclose(distorted, first_batch(mnist_root, pipeline, elastic=24.0, elastic_sigma=2.0),
                              atol=1e-3)


@pytest.mark.parametrize("pipeline", ["conventional", "device"])
def test_both_pipelines_shear_end_to_end(mnist_root, pipeline):
    """Through make_loaders and through a recipe: the shear changes the first batch, and reaches the loader."""
    plain = first_batch(mnist_root, pipeline)
    sheared = first_batch(mnist_root, pipeline, shear=10.0)
    assert sheared.shape == (100, 1, 28, 28) and not torch.allclose(sheared, plain, atol=1e-3)
    train, _ = utils.loaders(utils.recipe("Model_3", shear=10.0, holdout=100, pipeline=pipeline), mnist_root,
                             download=False)
    if pipeline == "device":
        assert train.shear == 10.0
    else:
        assert train.dataset.dataset.transform.augmented.transforms[0].shear == [-10.0, 10.0]


def test_a_recipes_elastic_settings_reach_its_loader(mnist_root):
    train, _ = utils.loaders(utils.recipe("Model_3", elastic=12.0, elastic_sigma=3.0, holdout=100), mnist_root,
                             download=False)
    assert (train.elastic, train.elastic_sigma) == (12.0, 3.0)
    assert utils.RECIPES["Model_3"].elastic == 24.0 and utils.RECIPES["Model_3"].elastic_sigma == 4.0


def test_conventional_transform_uses_black_fill_and_bilinear():
    rotation = utils.conventional_transform(5.0).transforms[0]
    assert rotation.degrees == [-5.0, 5.0]
    assert rotation.fill == 0 and rotation.interpolation == InterpolationMode.BILINEAR


def test_both_pipelines_normalise_identically(mnist_root):
    dev_train, dev_test = utils.make_loaders(mnist_root, "device", batch_size=50, download=False)
    conv_train, conv_test = utils.make_loaders(mnist_root, "conventional", batch_size=50, download=False,
                                               num_workers=0)
    (xd, yd), (xc, yc) = next(iter(dev_test)), next(iter(conv_test))
    assert xd.shape == xc.shape == (200, 1, 28, 28)
    assert torch.allclose(xd, xc, atol=1e-6) and torch.equal(yd, yc)
    assert len(dev_train) == len(conv_train) == 12
    for loader in (dev_train, conv_train):
        seen = torch.cat([y for _, y in loader])
        assert len(seen) == 600
        assert torch.equal(seen.sort().values, utils.load_mnist(mnist_root, download=False).targets.sort().values)


def test_holdout_evaluates_on_the_last_training_images(mnist_root):
    for pipeline in ("device", "conventional"):
        train, held = utils.make_loaders(mnist_root, pipeline, batch_size=100, download=False, holdout=100)
        assert sum(len(y) for _, y in train) == 500
        labels = torch.cat([y for _, y in held])
        assert torch.equal(labels, torch.from_numpy(synthetic_digits(600, seed=1)[1][500:]).long())


@pytest.mark.parametrize("pipeline", ["device", "conventional"])
def test_a_holdout_block_holds_out_those_images_and_trains_on_all_the_others(mnist_root, pipeline):
    """Block 2 of 100 is images 200-299: the evaluation loader yields exactly them, in order, and training sees
    every other image once per epoch (the labels and the pixel sums of the 500 account for the rest)."""
    images, labels = (torch.from_numpy(a) for a in synthetic_digits(600, seed=1))
    train, held = utils.make_loaders(mnist_root, pipeline, batch_size=100, download=False, holdout=100,
                                     holdout_block=2, num_workers=0)
    sums = utils.eval_loader(mnist_root, download=False, train=True).images.flatten(1).sum(1)  # one per image
    x, y = (torch.cat(t) for t in zip(*held))
    assert torch.equal(y, labels[200:300].long())
    assert torch.allclose(x.flatten(1).sum(1), sums[200:300], atol=1e-3)
    seen_x, seen_y = (torch.cat(t) for t in zip(*train))
    assert torch.equal(seen_y.sort().values, torch.cat([labels[:200], labels[300:]]).long().sort().values)
    rest = torch.cat([sums[:200], sums[300:]])
    assert torch.allclose(seen_x.flatten(1).sum(1).sort().values, rest.sort().values, atol=1e-3)


def test_the_default_holdout_block_is_the_last_images_and_a_bad_block_is_refused(mnist_root):
    assert utils.held_out_images(600, 100) == utils.held_out_images(600, 100, 5) == range(500, 600)
    assert utils.held_out_images(600, 100, 0) == range(0, 100) and utils.held_out_images(600, 0, 3) == range(600, 600)
    for block in (6, -2):
        with pytest.raises(ValueError, match=r"holdout_block must be -1 or in \[0, 6\)"):
            utils.make_loaders(mnist_root, "device", download=False, holdout=100, holdout_block=block)
    cfg = utils.Config(holdout=5000, holdout_block=3)
    assert utils.evaluated_on(cfg) == "training images 15000-19999"
    assert utils.evaluated_on(utils.Config(holdout=5000)) == "last 5000 training images"
    assert utils.evaluated_on(utils.Config()) == "test set"


def test_unknown_pipeline_is_refused(mnist_root):
    with pytest.raises(ValueError, match="unknown pipeline"):
        utils.make_loaders(mnist_root, "magic", download=False)


def test_real_mnist_loads(real_mnist):
    train = utils.load_mnist(real_mnist, train=True, download=False)
    test = utils.load_mnist(real_mnist, train=False, download=False)
    assert train.data.shape == (60000, 28, 28) and test.data.shape == (10000, 28, 28)
    assert np.bincount(train.targets.numpy()).min() > 5000


# --- clean epochs (Config.clean_epochs): the last epochs train on the images as they are ----------------------

@pytest.mark.parametrize("pipeline", ["device", "conventional"])
def test_a_clean_epoch_yields_the_images_as_they_are_and_augmentation_comes_back(mnist_root, pipeline):
    """Switched off, either pipeline's training loader yields each training image exactly as the evaluation
    loader's normalisation gives it (every image once); switched back on, it augments again."""
    train, _ = utils.make_loaders(mnist_root, pipeline, batch_size=100, rotation=7.0, scale=0.2, elastic=24.0,
                                  seed=0, download=False, holdout=100, num_workers=0, clean_epochs=1)
    reference = utils.eval_loader(mnist_root, download=False, train=True, subset=500).images
    utils.set_augmentation(train, False)
    clean = torch.cat([x for x, _ in train])
    assert clean.shape == (500, 1, 28, 28)
    rows = {tuple(img.flatten().tolist()) for img in reference}
    assert all(tuple(img.flatten().tolist()) in rows for img in clean)  # some order of the very same images
    assert torch.allclose(clean.sum(0), reference.sum(0), atol=1e-3)
    utils.set_augmentation(train, True)
    torch.manual_seed(0)
    augmented = torch.cat([x for x, _ in train])
    assert not any(tuple(img.flatten().tolist()) in rows for img in augmented[:20])


def test_a_clean_device_epoch_draws_its_permutation_and_nothing_else():
    """The generator moves by one permutation in a clean epoch, so the epochs before the first clean one draw
    exactly what a run without clean epochs draws, and a clean epoch yields the permuted images untouched."""
    images, labels = torch.randint(0, 256, (130, 28, 28), dtype=torch.uint8), torch.arange(130) % 10
    kwargs = dict(batch_size=64, rotation=7.0, scale=0.2, elastic=24.0, seed=5)
    switched, plain = utils.DeviceLoader(images, labels, **kwargs), utils.DeviceLoader(images, labels, **kwargs)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(switched, plain))  # an augmented epoch: the same draws
    state = switched.generator.get_state().clone()
    switched.augment = False
    x, y = map(torch.cat, zip(*switched))
    expected = torch.Generator().set_state(state)
    order = torch.randperm(130, generator=expected)
    assert torch.equal(x, utils.normalize(images)[order]) and torch.equal(y, labels[order])
    assert torch.equal(switched.generator.get_state(), expected.get_state())  # moved by one permutation only


def test_set_augmentation_refuses_persistent_workers_and_foreign_loaders(mnist_root):
    persistent, _ = utils.make_loaders(mnist_root, "conventional", batch_size=100, rotation=7.0, download=False,
                                       num_workers=1)
    assert persistent.persistent_workers
    with pytest.raises(ValueError, match="persistent"):
        utils.set_augmentation(persistent, False)
    switchable, _ = utils.make_loaders(mnist_root, "conventional", batch_size=100, rotation=7.0, download=False,
                                       num_workers=1, clean_epochs=3)
    assert not switchable.persistent_workers
    utils.set_augmentation(switchable, False)  # reaches the worker: its batches are the images as they are
    plain = utils.eval_loader(mnist_root, download=False, train=True).images
    rows = {tuple(img.flatten().tolist()) for img in plain}
    assert all(tuple(img.flatten().tolist()) in rows for x, _ in switchable for img in x)
    foreign = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(4, 1, 28, 28)), batch_size=2)
    with pytest.raises(TypeError, match="make_loaders"):
        utils.set_augmentation(foreign, False)


def test_the_suite_cannot_reach_the_network(tmp_path):
    """conftest's guard: a test that would download MNIST fails instead (torchvision's download, on an empty
    folder, with download=True)."""
    with pytest.raises(utils.DataError, match="tests must not use the network"):
        utils.load_mnist(tmp_path / "empty", download=True)
