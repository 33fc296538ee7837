"""Everything the three design steps stand on: data, loaders, training loops, plots, receptive fields.

Sections, in order: data -> transforms and loaders -> configuration -> train/eval loops -> plots ->
receptive field -> summary. Nothing runs at import time.

Two input pipelines with the same semantics (normalisation, rotation range, pixel shifts, scaling, shear, elastic
distortion, black fill):

* ``"device"`` (default): the whole split lives once on the training device as a normalised tensor,
  is reshuffled every epoch with a seeded ``randperm`` and rotated per sample on the device.
* ``"conventional"``: torchvision transforms on PIL images and a ``DataLoader``.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Subset, TensorDataset
from torchvision import datasets, transforms

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
TARGET_ACC = 99.4  # percent; the assignment's bar


# ---------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------

class DataError(RuntimeError):
    """MNIST could not be found, fetched or read intact; the message says where it looked and what to do."""


MNIST_FILES = tuple(Path(url).stem for url, _ in datasets.MNIST.resources)  # the four *-ubyte files in MNIST/raw
MNIST_SIZE = (28, 28)


def _reason(err: BaseException) -> str:
    """An exception's message on one line: its first line and, when there are more, its last (a failed
    download's first line names the file and its last the network error), else its type."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return (lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}")[:300]


def _mnist_problem(images: torch.Tensor, labels: torch.Tensor) -> str | None:
    """What keeps ``images`` and ``labels`` from being one label from 0 to 9 per 28x28 image, or ``None``."""
    if tuple(images.shape[1:]) != MNIST_SIZE:
        return f"images of {tuple(images.shape[1:])} pixels, not {MNIST_SIZE}"
    if len(images) != len(labels):
        return f"{len(images):,} images but {len(labels):,} labels"
    if len(labels) and not 0 <= labels.min().item() <= labels.max().item() <= 9:
        return f"labels from {labels.min().item()} to {labels.max().item()}, not 0 to 9"
    return None


def load_mnist(root: str | Path = "data", train: bool = True, download: bool = True,
               transform: Callable | None = None) -> datasets.MNIST:
    """Open MNIST under ``root`` (``<root>/MNIST/raw/*-ubyte``), downloading it there if allowed.

    Raises :class:`DataError` when the files are missing and cannot be fetched, and when they are there but cannot
    be read or do not hold one label from 0 to 9 per 28x28 image (a truncated, swapped or mismatched file, say)."""
    root = Path(root).expanduser()
    raw = root / "MNIST" / "raw"
    present = all((raw / name).is_file() for name in MNIST_FILES)
    try:
        split = datasets.MNIST(str(root), train=train, download=download, transform=transform)
    except Exception as err:  # torchvision raises RuntimeError, URLError, OSError... depending on the cause
        if present:  # torchvision found the files (it downloads nothing then): reading them failed
            raise DataError(f"MNIST in {raw.resolve()} cannot be read ({_reason(err)}); a file is truncated or "
                            f"not an MNIST idx file: replace them with the originals") from err
        how = "download failed" if download else "download disabled"
        raise DataError(
            f"MNIST not found in {root.resolve()} (expected {raw}/*-ubyte; {how}: {_reason(err)}); pass the "
            f"folder that holds MNIST/raw with --data-dir (make train DATA=...) or data_dir=..."
        ) from err
    problem = _mnist_problem(split.data, split.targets)
    if problem:
        which = "training" if train else "test"
        raise DataError(f"MNIST in {raw.resolve()} is not intact: its {which} files hold {problem}; replace them "
                        f"with the originals")
    return split


# ---------------------------------------------------------------------------------------------------------
# Transforms and loaders
# ---------------------------------------------------------------------------------------------------------

# The value a black (0) pixel takes after normalisation: rotation must fill with this, not with 0.
BLACK = -MNIST_MEAN / MNIST_STD


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28), scaled to [0, 1] and normalised like ``transforms.Normalize``."""
    return images_uint8.unsqueeze(1).float().div(255).sub(MNIST_MEAN).div(MNIST_STD)


def rotate(images: torch.Tensor, degrees: torch.Tensor, shifts: torch.Tensor | None = None,
           scales: torch.Tensor | None = None, displacement: torch.Tensor | None = None,
           shears: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate each normalised square image (N, 1, H, W) by its own angle (N,), counter-clockwise, about the centre;
    with ``shears`` (N,; degrees), first shear it parallel to the x axis by its own angle about the centre (a
    positive angle moves the rows below the centre to the left, as ``TF.affine(..., shear=[angle, 0])`` does);
    with ``scales`` (N,), also scale it by its own factor about the centre (> 1 enlarges); then, with ``shifts``
    (N, 2), move it by ``(dx, dy)`` pixels (right, down); then, with ``displacement`` (N, H, W, 2; grid units,
    :func:`elastic_field`), move each output pixel by its own offset: an elastic distortion.

    Bilinear, with a black background, in one resampling: same conventions as ``transforms.RandomRotation(fill=0,
    interpolation=BILINEAR)``, with shifts, scales and shears as ``transforms.RandomAffine(translate=...,
    scale=..., shear=...)``, and with a displacement as ``transforms.ElasticTransform`` applied after them, on the
    un-normalised image.
    """
    rad = torch.deg2rad(degrees.to(images.dtype))
    cos, sin = torch.cos(rad), torch.sin(rad)
    # grid_sample maps output -> input coordinates, y pointing down: input = (s A)^-1 (output - t), the inverse of
    # a CCW turn A and a scaling s followed by the shift t (in grid units: 2 / size per pixel).
    if shifts is None:
        tx = ty = torch.zeros_like(cos)
    else:
        h, w = images.shape[-2:]
        dx, dy = shifts[:, 0].to(images.dtype) * (2 / w), shifts[:, 1].to(images.dtype) * (2 / h)
        tx, ty = -(cos * dx - sin * dy), -(sin * dx + cos * dy)
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    if shears is not None:
        # the shear comes first on the way in (RandomAffine's R S SHx), so its inverse, [[1, tan], [0, 1]], comes
        # last on the way back: row x gains tan(angle) times row y
        tan = torch.tan(torch.deg2rad(shears.to(images.dtype))).view(-1, 1)
        theta = torch.stack([theta[:, 0] + tan * theta[:, 1], theta[:, 1]], 1)
    if scales is not None:
        theta = theta / scales.to(images.dtype).view(-1, 1, 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    if displacement is not None:
        # ElasticTransform after the affine map samples the affine output at p + d(p), i.e. the input at
        # theta (p + d(p), 1) = grid(p) + theta's linear part applied to d(p)
        grid = grid + torch.einsum("nij,nhwj->nhwi", theta[:, :, :2], displacement.to(images.dtype))
    out = F.grid_sample(images - BLACK, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + BLACK


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    """The 1-D Gaussian ``transforms.ElasticTransform`` blurs its noise with: ``int(8 sigma + 1)`` taps, made odd,
    normalised to sum 1 (its 2-D kernel is this one's outer product with itself)."""
    size = int(8 * sigma + 1)
    size += size % 2 == 0
    x = torch.linspace(-(size // 2), size // 2, size)
    pdf = torch.exp(-0.5 * (x / sigma) ** 2)
    return pdf / pdf.sum()


def blur_matrix(size: int, sigma: float) -> torch.Tensor:
    """(size, size): row i holds the weights :func:`gaussian_kernel1d` gives each of the ``size`` pixels at output
    pixel i, after reflect padding (a pixel reached twice, once through the reflection, counts twice). Blurring
    a (.., size) row is then ``row @ matrix.T``: the same sums as padding and convolving, in one small product."""
    k = gaussian_kernel1d(sigma)
    half = len(k) // 2
    if half >= size:
        raise ValueError(f"elastic_sigma {sigma} is too large for {size}-pixel images (reflect padding needs "
                         f"int(8 sigma + 1) // 2 < {size})")
    source = torch.arange(-half, size + half).abs()  # reflect: -1 -> 1, size -> size - 2
    source = torch.where(source > size - 1, 2 * (size - 1) - source, source)
    matrix = torch.zeros(size, size)
    for i in range(size):
        matrix[i].index_add_(0, source[i:i + len(k)], k)
    return matrix


@functools.lru_cache(maxsize=16)
def _blur_matrix_on(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """:func:`blur_matrix` on ``device`` in ``dtype``, built and copied once, then shared by every call
    (read-only): no batch rebuilds it or copies it to a GPU."""
    return blur_matrix(size, sigma).to(device, dtype)


def elastic_field(noise: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """Displacement fields (N, H, W, 2), in grid units (x, y), from uniform noise (N, 2, H, W) in [-1, 1]: each
    channel blurred by a Gaussian of ``sigma`` pixels with reflect padding, then scaled by ``alpha / size``, as
    ``transforms.ElasticTransform(alpha, sigma).get_params`` makes one field (there: channel 0 is x, scaled by
    the width). The 2-D blur is the outer product of two 1-D ones, so it runs as one small matrix product per
    axis (:func:`blur_matrix`) instead of a 2-D convolution per image."""
    h, w = noise.shape[-2:]
    blur_h = _blur_matrix_on(h, sigma, noise.device, noise.dtype)
    blur_w = blur_h if w == h else _blur_matrix_on(w, sigma, noise.device, noise.dtype)
    x = blur_h @ noise @ blur_w.T
    # alpha / size, computed on the CPU as it always was (the same float32 values; Python numbers: nothing to copy)
    per_x, per_y = (alpha / torch.tensor([w, h], dtype=x.dtype)).tolist()
    return torch.stack([x[:, 0] * per_x, x[:, 1] * per_y], -1)


def check_augmentation(rotation: float, translation: float, scale: float, shear: float, elastic: float) -> None:
    """Raise ``ValueError`` for an augmentation value out of range, the same for both pipelines: the bounds
    torchvision's ``RandomAffine`` enforces (a scale factor of 0 or below would blank or turn an image, a shift of
    more than the image would blank it), and no negative rotation, shear or elastic strength."""
    for name, value, ok, rule in (("rotation", rotation, rotation >= 0, ">= 0"),
                                  ("translation", translation, 0 <= translation <= 1, "in [0, 1]"),
                                  ("scale", scale, 0 <= scale < 1, "in [0, 1)"),
                                  ("shear", shear, shear >= 0, ">= 0"),
                                  ("elastic", elastic, elastic >= 0, ">= 0")):
        if not ok:
            raise ValueError(f"{name} must be {rule}, got {value}")


def conventional_transform(rotation: float = 0.0, translation: float = 0.0, scale: float = 0.0,
                           elastic: float = 0.0, elastic_sigma: float = 4.0, shear: float = 0.0) -> transforms.Compose:
    """PIL pipeline: optional ``RandomRotation(+-rotation)`` with black fill (``RandomAffine`` when there are
    also shifts of up to ``translation`` of the image size, scale factors in ``[1 - scale, 1 + scale]``, or shears
    parallel to the x axis by angles in ``[-shear, shear]`` degrees) ->
    with ``elastic > 0``, ``ElasticTransform(alpha=elastic, sigma=elastic_sigma)`` -> ``ToTensor`` ->
    ``Normalize``. Out-of-range values raise ``ValueError`` (:func:`check_augmentation`)."""
    check_augmentation(rotation, translation, scale, shear, elastic)
    steps: list[Callable] = []
    if translation > 0 or scale > 0 or shear > 0:
        steps.append(transforms.RandomAffine(rotation, translate=(translation, translation) if translation > 0
                                             else None, scale=(1 - scale, 1 + scale) if scale > 0 else None,
                                             shear=shear if shear > 0 else None,
                                             interpolation=transforms.InterpolationMode.BILINEAR, fill=0))
    elif rotation > 0:
        steps.append(transforms.RandomRotation(rotation, interpolation=transforms.InterpolationMode.BILINEAR,
                                               fill=0))
    if elastic > 0:
        steps.append(transforms.ElasticTransform(alpha=elastic, sigma=elastic_sigma,
                                                 interpolation=transforms.InterpolationMode.BILINEAR, fill=0))
    steps += [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    return transforms.Compose(steps)


class TrainTransform:
    """The conventional pipeline's training transform: ``augmented``, or, with ``augment = False`` (a clean epoch,
    :func:`set_augmentation`), ``plain``. It draws nothing itself."""

    def __init__(self, augmented: Callable, plain: Callable) -> None:
        self.augmented, self.plain, self.augment = augmented, plain, True

    def __call__(self, image):
        return (self.augmented if self.augment else self.plain)(image)

    def __repr__(self) -> str:
        return f"TrainTransform(augment={self.augment}, augmented={self.augmented!r})"


def set_augmentation(loader, on: bool) -> None:
    """Switch a training loader of either pipeline (:func:`make_loaders`) between its augmentation (``on``) and
    the images as they are (``Config.clean_epochs``). A conventional loader's workers must not be persistent (they
    would keep the transform they started with): :func:`make_loaders` builds it so when ``clean_epochs > 0``."""
    if isinstance(loader, DeviceLoader):
        loader.augment = on
        return
    dataset = loader.dataset.dataset if isinstance(loader.dataset, Subset) else loader.dataset
    transform = getattr(dataset, "transform", None)
    if not isinstance(transform, TrainTransform):
        raise TypeError("set_augmentation needs a training loader from make_loaders (its dataset's transform is "
                        f"a TrainTransform), got a transform of type {type(transform).__name__}")
    if loader.persistent_workers:
        raise ValueError("set_augmentation: this DataLoader's workers are persistent and would keep their transform; "
                         "build it with make_loaders(..., clean_epochs=N)")
    transform.augment = on


class DeviceLoader:
    """A drop-in replacement for ``DataLoader`` over a split held on the device.

    Each ``iter()`` is one epoch: a fresh seeded permutation (when ``shuffle``), then batches of
    ``batch_size`` with the last, smaller batch kept (like ``DataLoader(drop_last=False)``), so every sample
    is seen exactly once per epoch. With ``rotation > 0`` each image is turned by its own uniform angle in
    ``[-rotation, rotation]`` degrees; with ``translation > 0`` it is also shifted by a whole number of pixels
    per axis, drawn as ``RandomAffine(translate=(t, t))`` draws them: ``round(uniform(-t * size, t * size))``;
    with ``scale > 0`` it is also scaled about its centre by its own factor in ``[1 - scale, 1 + scale]``;
    with ``shear > 0`` it is also sheared parallel to the x axis by its own angle in ``[-shear, shear]`` degrees,
    as ``RandomAffine(shear=shear)`` draws one; with ``elastic > 0`` it is then distorted by its own displacement
    field, as ``ElasticTransform(alpha=elastic, sigma=elastic_sigma)`` draws one (:func:`elastic_field`), in the
    same resampling. Setting ``augment = False`` (a clean epoch, ``Config.clean_epochs``; :func:`set_augmentation`)
    yields the images as they are: the epoch then draws its permutation and nothing else.
    The permutation, the angles, the shifts, the factors and the shears are drawn once per epoch on the CPU
    from a seeded generator and copied in one go, so runs are reproducible on any device and no batch
    triggers a host-to-device copy; the elastic noise, (batch, 2, H, W) numbers, is drawn batch by batch from the
    same generator (after the epoch's other draws) and copied with its batch.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 128,
                 shuffle: bool = True, rotation: float = 0.0, seed: int = 0,
                 device: torch.device | str = "cpu", translation: float = 0.0, scale: float = 0.0,
                 elastic: float = 0.0, elastic_sigma: float = 4.0, shear: float = 0.0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if elastic > 0 and elastic_sigma <= 0:
            raise ValueError(f"elastic_sigma must be > 0, got {elastic_sigma}")
        check_augmentation(rotation, translation, scale, shear, elastic)
        self.device = torch.device(device)
        self.images = normalize(images).to(self.device) if images.dtype == torch.uint8 else images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.shuffle, self.rotation, self.translation = batch_size, shuffle, rotation, translation
        self.scale, self.elastic, self.elastic_sigma, self.shear = scale, elastic, elastic_sigma, shear
        self.augment = True
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    @property
    def dataset(self) -> TensorDataset:
        """The samples, as ``DataLoader.dataset`` offers them (``len(loader.dataset)`` works for both)."""
        return TensorDataset(self.images, self.labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator).to(self.device) if self.shuffle else None
        angles = shifts = scales = shears = None
        augment = self.augment and (self.rotation > 0 or self.translation > 0 or self.scale > 0 or self.elastic > 0
                                    or self.shear > 0)
        if augment:
            angles = (torch.rand(n, generator=self.generator) * 2 - 1).mul_(self.rotation).to(self.device)
        if augment and self.translation > 0:
            size = torch.tensor(self.images.shape[-1:-3:-1], dtype=torch.float32)  # (W, H): dx, dy
            shifts = ((torch.rand(n, 2, generator=self.generator) * 2 - 1) * (self.translation * size)).round()
            shifts = shifts.to(self.device)
        if augment and self.scale > 0:  # drawn after the angles and shifts: runs without scaling draw as they did
            scales = (1 + (torch.rand(n, generator=self.generator) * 2 - 1) * self.scale).to(self.device)
        if augment and self.shear > 0:  # drawn last: runs without shear draw as they did
            shears = ((torch.rand(n, generator=self.generator) * 2 - 1) * self.shear).to(self.device)
        for start in range(0, n, self.batch_size):
            idx = slice(start, start + self.batch_size)
            if order is not None:
                x, y = self.images[order[idx]], self.labels[order[idx]]
            else:
                x, y = self.images[idx], self.labels[idx]
            if angles is not None:
                field = None
                if self.elastic > 0:  # drawn batch by batch: an epoch's noise would be 60,000 x 2 x 28 x 28 numbers
                    noise = torch.rand(len(y), 2, *x.shape[-2:], generator=self.generator).mul_(2).sub_(1)
                    field = elastic_field(noise.to(self.device), self.elastic, self.elastic_sigma)
                x = rotate(x, angles[idx], None if shifts is None else shifts[idx],
                           None if scales is None else scales[idx], field, None if shears is None else shears[idx])
            yield x, y


def held_out_images(n: int, holdout: int, block: int = -1) -> range:
    """The indices of the ``holdout`` training images (of the first ``n``) held out for validation: block
    ``block`` of the consecutive blocks of ``holdout`` images, counted from 0; -1 (the default), the last
    ``holdout`` images. ``holdout = 0``: none."""
    if not 0 <= holdout < n:
        raise ValueError(f"holdout must be in [0, {n}), got {holdout}")
    if holdout == 0 or block == -1:
        return range(n - holdout, n)
    if not 0 <= block < n // holdout:
        raise ValueError(f"holdout_block must be -1 or in [0, {n // holdout}) for {holdout} of {n} training images, "
                         f"got {block}")
    return range(block * holdout, (block + 1) * holdout)


def training_index(n: int, holdout: int, block: int = -1) -> torch.Tensor:
    """The indices, in order, of the first ``n`` training images that are not held out (:func:`held_out_images`):
    the images a run trains on."""
    held = held_out_images(n, holdout, block)
    return torch.cat([torch.arange(held.start), torch.arange(held.stop, n)])


def make_loaders(data_dir: str | Path = "data", pipeline: str = "device", batch_size: int = 128,
                 rotation: float = 0.0, seed: int = 0, device: torch.device | str = "cpu",
                 download: bool = True, subset: int | None = None, eval_batch_size: int = 1000,
                 holdout: int = 0, num_workers: int | None = None,
                 translation: float = 0.0, scale: float = 0.0, holdout_block: int = -1,
                 elastic: float = 0.0, elastic_sigma: float = 4.0, clean_epochs: int = 0,
                 shear: float = 0.0) -> tuple[object, object]:
    """Train and evaluation loaders for either pipeline; both yield ``(images, labels)`` batches.

    The evaluation loader is the test split, or, with ``holdout > 0``, ``holdout`` training images, which are
    then left out of training: tune on that validation split, never on the test set. They are the last
    ``holdout`` images, or with ``holdout_block = b >= 0`` the images ``b * holdout`` to ``(b + 1) * holdout - 1``
    (the training images cut into consecutive blocks of ``holdout``, counted from 0; :func:`held_out_images`).
    ``subset`` keeps the first N images of each split (smoke runs). ``num_workers`` (conventional only)
    defaults to 2 on CUDA, the cores a free Colab gives, and 0 on the CPU, where workers would take cores
    from the model's arithmetic; with ``clean_epochs > 0`` they are not persistent, so that a transform switched by
    :func:`set_augmentation` reaches them at the next epoch. Workers that are not persistent are seeded anew from
    the loader's generator every epoch, so with workers a conventional run with clean epochs draws other
    augmentations than the same run without them from its second epoch on (the device pipeline, and the
    conventional one without workers, draw the same until the first clean epoch).
    """
    device = torch.device(device)
    if pipeline not in ("device", "conventional"):
        raise ValueError(f"unknown pipeline {pipeline!r}: use 'device' or 'conventional'")
    train_set = load_mnist(data_dir, True, download)
    n = len(train_set) if subset is None else min(subset, len(train_set))
    held_range = held_out_images(n, holdout, holdout_block)
    fit_index = training_index(n, holdout, holdout_block)
    test_set = None if holdout else load_mnist(data_dir, False, download)
    n_test = 0 if test_set is None else len(test_set) if subset is None else min(subset, len(test_set))

    if pipeline == "device":
        images, labels = train_set.data[fit_index], train_set.targets[fit_index]
        train = DeviceLoader(images, labels, batch_size, shuffle=True,
                             rotation=rotation, seed=seed, device=device, translation=translation, scale=scale,
                             elastic=elastic, elastic_sigma=elastic_sigma, shear=shear)
        if test_set is None:
            held = train_set.data[held_range.start:held_range.stop], train_set.targets[held_range.start:held_range.stop]
        else:
            held = test_set.data[:n_test], test_set.targets[:n_test]
        return train, DeviceLoader(*held, eval_batch_size, shuffle=False, device=device)

    if num_workers is None:
        num_workers = 2 if device.type == "cuda" else 0
    train_set.transform = TrainTransform(conventional_transform(rotation, translation, scale, elastic, elastic_sigma,
                                                               shear), conventional_transform(0.0))
    if test_set is None:  # the held-out images come without augmentation: a second view of the training files
        eval_set = Subset(load_mnist(data_dir, True, download, conventional_transform(0.0)), held_range)
    else:
        test_set.transform = conventional_transform(0.0)
        eval_set = Subset(test_set, range(n_test))
    common = dict(num_workers=num_workers, pin_memory=device.type == "cuda",
                  persistent_workers=num_workers > 0 and not clean_epochs)
    # each worker's torch RNG (which RandomRotation draws from) is seeded from this generator
    train = DataLoader(Subset(train_set, fit_index.tolist()), batch_size, shuffle=True,
                       generator=torch.Generator().manual_seed(seed), **common)
    return train, DataLoader(eval_set, eval_batch_size, shuffle=False, **common)


def eval_loader(data_dir: str | Path = "data", device: torch.device | str = "cpu", download: bool = True,
                train: bool = False, subset: int | None = None, batch_size: int = 1000) -> DeviceLoader:
    """A split as the device pipeline's evaluation loader, the one training evaluates with: in order, no
    augmentation. The test split by default; ``train=True`` gives the training images (e.g. to measure train
    accuracy with dropout off)."""
    split = load_mnist(data_dir, train, download)
    n = len(split) if subset is None else min(subset, len(split))
    return DeviceLoader(split.data[:n], split.targets[:n], batch_size, shuffle=False, device=device)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a ``state_dict`` saved by ``train.py`` (``torch.load(..., weights_only=True)``) into ``model``."""
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


# ---------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------

@dataclass
class Config:
    """One training recipe. Printed at the top of every run so a log describes itself."""

    epochs: int = 15
    batch_size: int = 128
    lr: float = 0.01           # the constant LR, or OneCycle's peak LR
    momentum: float = 0.9      # SGD momentum; "onecycle" ignores it unless cycle_momentum is off (make_optimizer)
    nesterov: bool = False     # Nesterov momentum
    weight_decay: float = 0.0
    schedule: str = "constant"  # "constant" | "onecycle" (stepped per batch) | "step" (per epoch)
    hold_epochs: int = 0       # onecycle: the last N epochs train at the cycle's final LR (lr / 100, or final_lr)
    cycle_momentum: bool = True  # onecycle: move the momentum 0.95 -> 0.85 -> 0.95 against the LR; off: keep momentum
    final_lr: float = 0.0      # onecycle: > 0: the LR the cycle anneals to, and the hold keeps, instead of lr / 100
    rotation: float = 0.0      # degrees; each training image gets its own angle in [-rotation, rotation]
    translation: float = 0.0   # > 0: each training image is also shifted by up to this fraction of its size
    scale: float = 0.0         # > 0: each training image is also scaled by its own factor in [1 - scale, 1 + scale]
    elastic: float = 0.0       # > 0: ... and distorted by its own field, as ElasticTransform(alpha=elastic) draws it
    elastic_sigma: float = 4.0  # the Gaussian (pixels) that smooths the elastic field
    shear: float = 0.0         # > 0: ... and sheared along x by its own angle in [-shear, shear] degrees
    seed: int = 1
    pipeline: str = "device"   # "device" | "conventional"
    holdout: int = 0           # > 0: evaluate on N training images (the last N) instead of the test set
    holdout_block: int = -1    # >= 0: hold out training images b*N to (b+1)*N - 1 instead (held_out_images)
    bf16: bool = False         # train under bfloat16 autocast on a CPU with native bf16 (see training_dtype)
    ema: float = 0.0           # > 0: evaluate and keep an exponential moving average of the weights (see fit)
    label_smoothing: float = 0.0  # > 0: train on targets smoothed by this much (train_epoch); evaluation: plain NLL
    clean_epochs: int = 0      # > 0: the last N epochs train on the images as they are, without augmentation
    recalibrate_bn: int = 0    # > 0: each evaluation re-estimates BatchNorm's statistics on N training images first

    def __str__(self) -> str:
        return "config: " + " ".join(f"{k}={v}" for k, v in asdict(self).items())


# One recipe per design step, kept here so that notebooks and train.py cannot drift apart.
RECIPES: dict[str, Config] = {
    "Model_1": Config(lr=0.01, schedule="constant", rotation=0.0),
    "Model_2": Config(lr=0.01, schedule="constant", rotation=0.0),
    "Model_3": Config(lr=0.1, schedule="onecycle", hold_epochs=3, rotation=7.0, scale=0.2, elastic=24.0,
                      batch_size=64, bf16=True, ema=0.999),
}


def recipe(model_name: str, **overrides) -> Config:
    """The step's recipe for ``model_name`` with ``overrides`` applied (an unknown model name raises ``ValueError``,
    unknown keys ``TypeError``)."""
    if model_name not in RECIPES:  # a typo must not train silently with the default Config
        raise ValueError(f"no recipe for {model_name!r}; pick one of {', '.join(RECIPES)}")
    base = RECIPES[model_name]
    known = {f.name for f in fields(Config)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"unknown config field(s): {', '.join(sorted(unknown))}")
    return Config(**{**asdict(base), **overrides})


def loaders(cfg: Config, data_dir: str | Path = "data", device: torch.device | str = "cpu", download: bool = True,
            subset: int | None = None) -> tuple[object, object]:
    """:func:`make_loaders` with the pipeline, batch size, augmentation, seed and holdout of ``cfg``."""
    return make_loaders(data_dir, cfg.pipeline, cfg.batch_size, cfg.rotation, cfg.seed, device, download, subset,
                        holdout=cfg.holdout, translation=cfg.translation, scale=cfg.scale,
                        holdout_block=cfg.holdout_block, elastic=cfg.elastic, elastic_sigma=cfg.elastic_sigma,
                        clean_epochs=cfg.clean_epochs, shear=cfg.shear)


def calibration_loader(cfg: Config, data_dir: str | Path = "data", device: torch.device | str = "cpu",
                       download: bool = True, subset: int | None = None) -> DeviceLoader | None:
    """The images :func:`reestimate_bn` runs on under ``cfg.recalibrate_bn = N > 0`` (``None`` when it is 0): the
    first N training images that are not held out (all of them, if fewer), as they are (no augmentation), in
    order, as the device pipeline's evaluation loader holds them, whichever pipeline trains. Iterating it draws no
    random number, so it cannot change what a run draws."""
    if cfg.recalibrate_bn < 0:
        raise ValueError(f"recalibrate_bn must be >= 0 (a number of training images), got {cfg.recalibrate_bn}")
    if not cfg.recalibrate_bn:
        return None
    train_set = load_mnist(data_dir, True, download)
    n = len(train_set) if subset is None else min(subset, len(train_set))
    index = training_index(n, cfg.holdout, cfg.holdout_block)[:cfg.recalibrate_bn]
    return DeviceLoader(train_set.data[index], train_set.targets[index], 1000, shuffle=False, device=device)


class OneCycleThenHold(torch.optim.lr_scheduler.OneCycleLR):
    """OneCycleLR over its ``total_steps``; stepped beyond them, the LR stays at the cycle's final value.

    So the cycle can end before the run does: with ``Config.hold_epochs`` the LR has come down by then, and the
    last epochs train at a small constant LR instead of still falling from a large one.
    """

    def step(self, epoch=None) -> None:
        if self.last_epoch < self.total_steps - 1:
            super().step(epoch)


def make_optimizer(model: nn.Module, cfg: Config, steps_per_epoch: int):
    """SGD with momentum and the schedule ``cfg.schedule``; returns ``(optimizer, scheduler or None)``.

    Under "onecycle" with ``cfg.cycle_momentum`` (the default), ``cfg.momentum`` is not used: OneCycleLR sets the
    momentum and moves it against the LR, 0.95 at the cycle's start, 0.85 at the peak LR, 0.95 at its end, and
    the hold keeps 0.95. Printed configs say ``momentum=0.9`` for every recipe; step 3's runs trained with the cycle.
    With ``cycle_momentum=False`` the momentum stays ``cfg.momentum`` and only the LR follows the cycle.
    """
    if not 0 < cfg.lr < math.inf:
        raise ValueError(f"lr must be a positive number, got {cfg.lr}")
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=cfg.nesterov)
    if cfg.schedule == "constant":
        return opt, None
    if cfg.schedule == "onecycle":
        total = max(1, cfg.epochs - cfg.hold_epochs) * steps_per_epoch
        # OneCycleLR divides by zero with fewer than two warm-up steps: smoke runs of < 10 steps warm up longer,
        # and a run of one or two steps follows the start of a 3-step cycle
        total = max(3, total)
        if not 0 <= cfg.final_lr < cfg.lr:
            raise ValueError(f"final_lr must be >= 0 and below the peak LR {cfg.lr} (0: lr / 100), "
                             f"got {cfg.final_lr}")
        # lr/25 -> lr -> lr/100, or -> final_lr (OneCycleLR ends at its start LR, lr / div_factor, / final_div_factor)
        start_div = 25
        final_div = cfg.lr / start_div / cfg.final_lr if cfg.final_lr else 4
        return opt, OneCycleThenHold(opt, max_lr=cfg.lr, total_steps=total, pct_start=max(0.2, 2 / total),
                                     div_factor=start_div, final_div_factor=final_div,
                                     cycle_momentum=cfg.cycle_momentum)
    if cfg.schedule == "step":
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, cfg.epochs // 3), gamma=0.1)
    raise ValueError(f"unknown schedule {cfg.schedule!r}: use 'constant', 'onecycle' or 'step'")


# ---------------------------------------------------------------------------------------------------------
# Train and evaluate
# ---------------------------------------------------------------------------------------------------------

class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_device(name: str | None = None) -> torch.device:
    """``name`` if given, else the best available: cuda -> mps -> cpu."""
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class History:
    """Per-epoch metrics; accuracies in percent."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    # with BatchNorm re-estimation (Config.recalibrate_bn): the same weights scored with the statistics they
    # carried from training; empty otherwise
    uncalibrated_test_loss: list[float] = field(default_factory=list)
    uncalibrated_test_acc: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, list]:
        """Every field; the two ``uncalibrated_*`` lists only when they were recorded, so a run without the
        re-estimation records what it always did."""
        record = asdict(self)
        for name in ("uncalibrated_test_loss", "uncalibrated_test_acc"):
            if not record[name]:
                del record[name]
        return record

    def line(self, i: int = -1, epochs: int | None = None) -> str:
        """The fixed-format log line of epoch ``i``."""
        total = f"/{epochs}" if epochs else ""
        return (f"epoch {self.epoch[i]:>2}{total} | train loss {self.train_loss[i]:.4f} acc {self.train_acc[i]:6.2f}% "
                f"| test loss {self.test_loss[i]:.4f} acc {self.test_acc[i]:6.2f}% "
                f"| lr {self.lr[i]:.5f} | {self.seconds[i]:5.1f}s"
                + (f" | uncalibrated {self.uncalibrated_test_acc[i]:6.2f}%" if self.uncalibrated_test_acc else ""))


def _progress(iterable, desc: str):
    """A transient per-batch text bar (``leave=False``): the epoch line is the record, not the bar.

    In a terminal it is tqdm's text bar, and nothing when the output is redirected to a log. In a Jupyter kernel
    (Colab included) it is the same text bar, redrawn in place in one output that is emptied at the end: never an
    ipywidgets progress bar, whose widget state a notebook saved from Colab would carry and which keeps GitHub from
    rendering it.
    """
    from tqdm import tqdm

    line = _DisplayLine.for_this_cell()
    if line is not None:
        return tqdm(iterable, desc=desc, leave=False, mininterval=1.0, file=line, ascii=True, ncols=100)
    return tqdm(iterable, desc=desc, leave=False, mininterval=1.0, disable=None)


class _DisplayLine:
    """A file for tqdm inside a notebook: each write replaces the text of one output, in place.

    tqdm redraws a bar as ``"\\r" + bar`` and, with ``leave=False``, clears it with ``"\\r" + spaces + "\\r"``;
    only the text after the last carriage return is shown, so a cleared bar leaves one empty output. All the bars
    of one cell (one per epoch) share that output.
    """

    _current: tuple[int, "_DisplayLine"] | None = None

    @classmethod
    def for_this_cell(cls) -> "_DisplayLine | None":
        """The line of the cell now running in a Jupyter kernel, or ``None`` outside a kernel."""
        ipython = sys.modules.get("IPython")
        shell = ipython.get_ipython() if ipython is not None else None
        if shell is None or not hasattr(shell, "kernel"):
            return None
        if cls._current is None or cls._current[0] != shell.execution_count:
            cls._current = (shell.execution_count, cls())
        return cls._current[1]

    def __init__(self) -> None:
        from IPython.display import display

        self._handle = display({"text/plain": ""}, raw=True, display_id=True)

    def write(self, text: str) -> None:
        if text:
            self._handle.update({"text/plain": text.rsplit("\r", 1)[-1].rstrip()}, raw=True)

    def flush(self) -> None:
        pass


def device_name(device: torch.device) -> str:
    """A readable name for logs and results: the GPU model, or the CPU and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return device.type


def _print(line: str) -> None:
    print(line, flush=True)  # flushed, so that logs of background runs are live


def _check_finite(loss_sum: torch.Tensor, epoch: int) -> None:
    if not torch.isfinite(loss_sum):
        raise TrainingDiverged(f"loss became {loss_sum.item()} in epoch {epoch}: lower the learning rate "
                               f"(--lr) or check the input data")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU does bfloat16 arithmetic in hardware (AVX512-BF16 or AMX).

    PyTorch answers only through private ``torch.cpu`` functions; if they are missing, the answer is no.
    """
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(check() for check in checks if check is not None)
    except RuntimeError:
        return False


def training_dtype(cfg: Config, device: torch.device | str) -> torch.dtype:
    """The dtype the training forward pass computes in: ``torch.bfloat16`` when ``cfg.bf16`` and ``device`` is a
    CPU with native bf16, else ``torch.float32``.

    On the development CPU (AVX512-BF16 and AMX) bf16 autocast made a training epoch 1.28x faster in design v5's
    ``bench.py`` run (``results/design_v5/bench_cpu.json``; 1.43x in design v7's, ``results/design_v7/``, and 1.36x
    in design v12's, ``results/design_v12/bench_cpu.json``; 1.28x in design v17's, ``results/design_v17/``, and 1.30x
    in design v33's, ``results/bench_cpu.json``) and validation runs 23 % shorter on average
    (``results/validation/v5/``); the per-step timing quoted in ``results/design_v5/PLAN.md`` came from a script that
    is not committed. GPUs and CPUs without native bf16 train in float32: bf16 was not measured there. Weights,
    optimiser state and every evaluation stay float32 either way.
    """
    native = torch.device(device).type == "cpu" and cpu_has_native_bf16()
    return torch.bfloat16 if cfg.bf16 and native else torch.float32


def _require_samples(seen: int, what: str) -> None:
    """A clear error instead of a division by zero when ``loader`` yielded nothing (an empty split or subset)."""
    if not seen:
        raise ValueError(f"{what}: the loader yielded no samples (an empty split, or subset=0?)")


def _require_log_probabilities(output: torch.Tensor) -> None:
    """``output`` must be log-probabilities (each row's exponentials sum to 1): ``nll_loss`` (evaluation's loss,
    and training's without label smoothing) on raw scores is not cross-entropy, and trains toward ever larger
    scores without an error. One check per epoch, on its first batch (the tolerance leaves room for bf16
    autocast)."""
    total = output.detach().float().logsumexp(1)
    finite = torch.isfinite(total)  # a NaN or infinite output is the divergence check's (TrainingDiverged)
    if not torch.allclose(total[finite], torch.zeros_like(total[finite]), atol=0.05):
        raise ValueError("the model must return log-probabilities (end forward with F.log_softmax(x, dim=1)); "
                         f"its outputs' logsumexp is {total[finite].mean().item():.3g}, not 0")


def train_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, device: torch.device,
                scheduler=None, epoch: int = 1, dtype: torch.dtype = torch.float32,
                ema: AveragedModel | None = None, label_smoothing: float = 0.0) -> tuple[float, float]:
    """One pass over ``loader``; ``scheduler`` (if given) is stepped after every batch. Returns (loss, acc %).

    ``model`` must return log-probabilities: the first batch's output is checked (``ValueError`` otherwise).

    ``ema`` (if given) is updated from ``model`` after every optimiser step.
    ``label_smoothing > 0`` trains on targets that put ``1 - label_smoothing`` on the label and spread
    ``label_smoothing`` evenly over all classes (``F.cross_entropy(..., label_smoothing=...)``: on
    log-probabilities it is the same loss as on logits, since ``log_softmax`` leaves log-probabilities unchanged);
    the loss returned is then that smoothed loss. 0 is ``F.nll_loss``, exactly as before the option existed.

    ``dtype=torch.bfloat16`` runs the forward pass (and so its backward) under bf16 autocast; the weights and
    their updates stay float32, and the loss is taken in float32. Loss and correct counts are summed on the
    device; the only synchronisations are the first batch's check of the output, the progress bar's occasional
    refresh and the end of the epoch (and, with a loader's elastic distortion on a GPU, each batch's copy of its
    noise).
    """
    device = torch.device(device)
    # float32 runs no autocast context at all: the code path of every run before bf16 existed, on any device
    if dtype == torch.float32:
        precision = contextlib.nullcontext
    else:
        def precision():
            return torch.autocast(device.type, dtype=dtype)
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    bar = _progress(loader, f"epoch {epoch}")
    for step, (x, y) in enumerate(bar):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with precision():
            log_probs = model(x)
        log_probs = log_probs.float()
        if step == 0:
            _require_log_probabilities(log_probs)
        if label_smoothing:
            loss = F.cross_entropy(log_probs, y, label_smoothing=label_smoothing)
        else:
            loss = F.nll_loss(log_probs, y)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        loss_sum += loss.detach() * len(y)
        correct += (log_probs.argmax(1) == y).sum()
        seen += len(y)
        if step % 100 == 99:
            _check_finite(loss_sum, epoch)
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}")
    _require_samples(seen, "train_epoch")
    _check_finite(loss_sum, epoch)
    return loss_sum.item() / seen, 100.0 * correct.item() / seen


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy (``nll_loss`` of the model's log-probabilities) and accuracy (%) over ``loader``."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        log_probs = model(x)
        loss_sum += F.nll_loss(log_probs, y, reduction="sum")
        correct += (log_probs.argmax(1) == y).sum()
        seen += len(y)
    _require_samples(seen, "evaluate")
    return loss_sum.item() / seen, 100.0 * correct.item() / seen


@torch.no_grad()
def reestimate_bn(model: nn.Module, loader, device: torch.device) -> nn.Module:
    """Replace every BatchNorm layer's running statistics by their average over ``loader``'s images.

    As ``torch.optim.swa_utils.update_bn`` does (statistics reset, ``momentum=None``: every batch counts equally),
    except that only the BatchNorm layers are in training mode: dropout stays off, as in evaluation, so the pass
    draws no random number. float32, no gradient; no weight changes. Returns ``model``, in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for x, _ in loader:
            model(x.to(device, non_blocking=True))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return model


def fit(model: nn.Module, train_loader, test_loader, optimizer: torch.optim.Optimizer, epochs: int,
        device: torch.device, scheduler=None, per_batch: bool | None = None,
        log: Callable[[str], None] | None = _print, dtype: torch.dtype = torch.float32,
        ema_decay: float = 0.0, label_smoothing: float = 0.0, clean_epochs: int = 0,
        calibration_loader=None) -> History:
    """Train for ``epochs``, evaluating after each; prints one fixed-format line per epoch.

    ``per_batch`` says whether ``scheduler`` steps after each batch (OneCycleLR, CyclicLR: the default for
    those) or after each epoch (everything else; ReduceLROnPlateau steps on the epoch's evaluation loss, the
    ``test_loader``'s, as the course's loops do). ``dtype``: the training forward pass's (:func:`train_epoch`);
    evaluation is always float32.
    ``ema_decay > 0``: an exponential moving average of the weights and BatchNorm statistics
    (``torch.optim.swa_utils``; ``ema = decay * ema + (1 - decay) * weights`` after every optimiser step) is what
    each epoch evaluates, and ``model`` ends holding it, so the weights a run saves are the ones it scored.
    ``label_smoothing``: the training loss's (:func:`train_epoch`); evaluation scores plain ``nll_loss``.
    ``clean_epochs = N > 0``: the last N epochs train on the images as they are (:func:`set_augmentation`); the
    loader's augmentation is switched on at the start (so a loader that cannot be switched fails before any
    training) and is on again when ``fit`` returns.
    ``calibration_loader`` (``Config.recalibrate_bn``; :func:`calibration_loader`): each epoch scores the model
    (the moving average, with ``ema_decay``) as above, recorded as ``uncalibrated_test_*``, then a copy of it whose
    BatchNorm statistics :func:`reestimate_bn` has re-estimated on these images, recorded as ``test_*``. The copy
    leaves the training, its random draws and the moving average untouched; ``model`` ends holding the weights
    of the last epoch's copy and its statistics, the model that epoch scored.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if not 0 <= ema_decay < 1:  # 1 would keep the first step's weights for good; below 0 is no average at all
        raise ValueError(f"ema_decay must be at least 0 and below 1 (0: no moving average), got {ema_decay}")
    if not 0 <= clean_epochs <= epochs:
        raise ValueError(f"clean_epochs must be in [0, epochs = {epochs}], got {clean_epochs}")
    if clean_epochs:
        set_augmentation(train_loader, True)
    ema = None
    if ema_decay > 0:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
    scored = ema.module if ema is not None else model
    calibrated = None
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if per_batch is None:
        per_batch = isinstance(scheduler, (torch.optim.lr_scheduler.OneCycleLR, torch.optim.lr_scheduler.CyclicLR))
    if plateau and per_batch:  # it needs a loss to step on, and only an epoch's evaluation gives one
        raise ValueError("ReduceLROnPlateau steps once per epoch, on the evaluation loss: pass per_batch=False")
    history = History()
    try:
        for epoch in range(1, epochs + 1):
            if clean_epochs and epoch == epochs - clean_epochs + 1:
                set_augmentation(train_loader, False)
            lr = optimizer.param_groups[0]["lr"]
            start = time.perf_counter()
            train_loss, train_acc = train_epoch(model, train_loader, optimizer, device,
                                                scheduler if per_batch else None, epoch, dtype, ema, label_smoothing)
            test_loss, test_acc = evaluate(scored, test_loader, device)
            if calibration_loader is not None:
                history.uncalibrated_test_loss.append(test_loss)
                history.uncalibrated_test_acc.append(test_acc)
                calibrated = reestimate_bn(copy.deepcopy(scored), calibration_loader, device)
                test_loss, test_acc = evaluate(calibrated, test_loader, device)
            if plateau:
                scheduler.step(test_loss)
            elif scheduler is not None and not per_batch:
                scheduler.step()
            for name, value in zip(("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"),
                                   (epoch, train_loss, train_acc, test_loss, test_acc, lr,
                                    time.perf_counter() - start)):
                getattr(history, name).append(value)
            if log:
                log(history.line(-1, epochs))
    finally:
        if clean_epochs:
            set_augmentation(train_loader, True)
    final = calibrated if calibrated is not None else ema.module if ema is not None else None
    if final is not None:  # what the last epoch scored; counters (BatchNorm's batch count) stay the training's
        trained = model.state_dict()
        model.load_state_dict({k: v if v.is_floating_point() else trained[k]
                               for k, v in final.state_dict().items()})
    return history


def train_model(model: nn.Module, cfg: Config, data_dir: str | Path = "data", device: torch.device | None = None,
                download: bool = True, subset: int | None = None,
                log: Callable[[str], None] | None = _print) -> History:
    """Seed, build the loaders, optimiser and schedule of ``cfg``, and ``fit``: one run of a step's recipe.

    ``model`` must return log-probabilities (end with ``F.log_softmax``), as S7's models do: the loss is
    ``F.nll_loss``, and the first batch of each epoch is checked (:func:`train_epoch`). ``device``: a
    ``torch.device`` or its name ("cpu", "cuda"); the best available when left out."""
    device = torch.device(device) if device else get_device()
    set_seed(cfg.seed)
    train_loader, test_loader = loaders(cfg, data_dir, device, download, subset)
    calibration = calibration_loader(cfg, data_dir, device, download, subset)
    set_seed(cfg.seed)  # the weights do not depend on how much randomness the loaders consumed
    model.apply(_reset)
    to_device(model, device)
    optimizer, scheduler = make_optimizer(model, cfg, len(train_loader))
    dtype = training_dtype(cfg, device)
    if log:
        log(f"{cfg}\ndevice: {device_name(device)} | training in {precision_name(dtype)} | "
            f"parameters: {count_parameters(model):,}")
        if cfg.ema:
            log(f"every evaluation below scores an exponential moving average of the weights (decay {cfg.ema})")
            steps = cfg.epochs * len(train_loader)
            share = cfg.ema ** steps  # what the first step's weights still weigh in the average at the end
            if share > 0.05:
                log(f"note: after this run's {steps:,} steps the moving average still holds {share:.0%} of the "
                    f"first step's weights; score a run this short without it (ema=0, --ema 0)")
        if cfg.clean_epochs:
            first = cfg.epochs - cfg.clean_epochs + 1
            which = f"epochs {first}-{cfg.epochs} train" if first < cfg.epochs else f"epoch {first} trains"
            log(f"{which} on the images as they are: no augmentation (clean_epochs={cfg.clean_epochs})")
        if calibration is not None:
            log(f"each evaluation re-estimates BatchNorm's statistics on the first {len(calibration.labels):,} "
                f"training images as they are, then scores (recalibrate_bn={cfg.recalibrate_bn}); 'uncalibrated': "
                f"the same weights with the statistics they trained with")
        if cfg.holdout:
            log(f"'test' below is the validation split ({evaluated_on(cfg)}), not the test set")
    return fit(model, train_loader, test_loader, optimizer, cfg.epochs, device, scheduler, log=log, dtype=dtype,
               ema_decay=cfg.ema, label_smoothing=cfg.label_smoothing, clean_epochs=cfg.clean_epochs,
               calibration_loader=calibration)


def evaluated_on(cfg: Config) -> str:
    """What a run's evaluations score: the test set, or which training images were held out."""
    if not cfg.holdout:
        return "test set"
    if cfg.holdout_block == -1:
        return f"last {cfg.holdout} training images"
    first = cfg.holdout_block * cfg.holdout
    return f"training images {first}-{first + cfg.holdout - 1}"


def precision_name(dtype: torch.dtype) -> str:
    """How a run's training arithmetic is described in its log and JSON."""
    return "bfloat16 autocast" if dtype == torch.bfloat16 else "float32"


def to_device(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device``; on a CPU also into the ``channels_last`` memory layout.

    Same arithmetic, another order of the numbers in memory: oneDNN's convolutions, BatchNorm and ReLU run
    faster on channels-last maps on this CPU (see bench.py). Training and every evaluation of saved weights go
    through here, so both see the same layout. On a GPU the layout is left as it is (not measured there).
    """
    model.to(device)
    if torch.device(device).type == "cpu":
        model.to(memory_format=torch.channels_last)
    return model


def _reset(module: nn.Module) -> None:
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()


def last_epochs_summary(test_acc: list[float], k: int = 5, target: float = TARGET_ACC) -> dict[str, float | int | None]:
    """best, last, min and mean of the last ``k`` epochs, and the first epoch (1-based) at or above ``target``."""
    tail = test_acc[-k:]
    first = next((i + 1 for i, a in enumerate(test_acc) if a >= target), None)
    return {"best": max(test_acc), "last": test_acc[-1], f"min_last{k}": min(tail),
            f"mean_last{k}": sum(tail) / len(tail), "first_at_target": first}


def run_record(name: str, model: nn.Module, cfg: Config, history: History, device: torch.device,
               wall_seconds: float | None = None, subset: int | None = None) -> dict:
    """What identifies and describes one run: model, seed, recipe, device, versions, parameters, time, metrics.

    ``wall_seconds`` defaults to the sum of the epochs' times.
    """
    return {
        "model": name,
        "seed": cfg.seed,
        "config": config_record(cfg, subset),
        "evaluated_on": evaluated_on(cfg),
        "device": device_name(device),
        "training_precision": precision_name(training_dtype(cfg, device)),
        "versions": library_versions(),
        "parameters": count_parameters(model),
        "wall_seconds": round(sum(history.seconds) if wall_seconds is None else wall_seconds, 2),
        "summary": last_epochs_summary(history.test_acc),
        "history": history.to_dict(),
    }


def config_record(cfg: Config, subset: int | None = None) -> dict:
    """The recipe plus the data subset: two runs with equal records are the same experiment."""
    return dict(vars(cfg), subset=subset)


def same_experiment(saved: dict, cfg: Config, subset: int | None = None) -> bool:
    """Whether a run's saved config record is ``cfg`` on ``subset``. A field the record predates (added to
    :class:`Config` after the run, e.g. ``bf16`` or ``ema``) counts as its default, which is what that run used."""
    defaults = {f.name: f.default for f in fields(Config)}
    return {**defaults, **saved} == config_record(cfg, subset)


def library_versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__}


def save_run(stem: str | Path, record: dict, model: nn.Module) -> None:
    """``<stem>.pt`` (the ``state_dict``), then ``<stem>.json`` (``record``), each written whole or not at all.

    The JSON comes last: its presence marks the run as finished.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    weights_tmp = stem.with_name(stem.name + ".pt.tmp")
    torch.save(model.state_dict(), weights_tmp)
    os.replace(weights_tmp, stem.with_name(stem.name + ".pt"))
    write_json_atomic(stem.with_name(stem.name + ".json"), record)


def write_json_atomic(path: str | Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` via a temporary file and ``os.replace``: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------
# Plots (each returns a matplotlib Figure: notebooks show it, scripts save it)
# ---------------------------------------------------------------------------------------------------------

def plot_history(history: History, title: str = "", target: float = TARGET_ACC):
    """Loss and accuracy curves, train and test, with the target accuracy as a dashed line."""
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for split in ("train", "test"):
        ax_loss.plot(history.epoch, getattr(history, f"{split}_loss"), marker="o", label=split)
        ax_acc.plot(history.epoch, getattr(history, f"{split}_acc"), marker="o", label=split)
    ax_acc.axhline(target, ls="--", c="gray", label=f"{target} %")
    settled = len(history.epoch) // 5  # zoom past the first fifth of the epochs, where the interesting range is
    ax_acc.set_ylim(min(history.test_acc[settled:] + history.train_acc[settled:] + [target]) - 0.3, 100)
    for ax, what in ((ax_loss, "cross-entropy"), (ax_acc, "accuracy (%)")):
        ax.set(xlabel="epoch", ylabel=what)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


@torch.no_grad()
def predict(model: nn.Module, loader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images, predictions, labels)`` over ``loader``, on the CPU."""
    model.eval()
    xs, preds, ys = [], [], []
    for x, y in loader:
        xs.append(x.cpu())
        preds.append(model(x.to(device)).argmax(1).cpu())
        ys.append(y.cpu())
    _require_samples(len(ys), "predict")
    return torch.cat(xs), torch.cat(preds), torch.cat(ys)


def _image_grid(images: torch.Tensor, titles: list[str], cols: int = 10):
    import matplotlib.pyplot as plt

    rows = max(1, math.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        ax.imshow(img.squeeze(0) * MNIST_STD + MNIST_MEAN, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def plot_misclassified(model: nn.Module, loader, device: torch.device, n: int = 20):
    """The first ``n`` misclassified test images, titled ``pred/true``."""
    images, preds, labels = predict(model, loader, device)
    wrong = (preds != labels).nonzero().flatten()[:n]
    return _image_grid(images[wrong], [f"{preds[i]}/{labels[i]} " for i in wrong.tolist()])


def plot_batch(loader, n: int = 20):
    """The first ``n`` images of one training batch as the model sees them (augmented), titled by label.

    Drawing the batch draws random numbers (a DeviceLoader draws a whole epoch's permutation and augmentation);
    the loader's generator (a DeviceLoader's, or a DataLoader's ``generator``) and torch's global one are put back
    as they were, so training on ``loader`` afterwards is the run it would have been without the plot. A DataLoader
    with workers is read through a copy without them (the same dataset, sampler and batch size): its own workers,
    persistent ones included, are not started, and so draw nothing ahead of the training."""
    generator = getattr(loader, "generator", None)  # a DataLoader's shuffling sampler draws from it
    if isinstance(loader, DataLoader) and loader.num_workers > 0:
        loader = DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=loader.sampler)
    saved = generator.get_state() if isinstance(generator, torch.Generator) else None
    saved_global = torch.get_rng_state()
    try:
        images, labels = next(iter(loader))
    finally:
        torch.set_rng_state(saved_global)
        if saved is not None:
            generator.set_state(saved)
    return _image_grid(images[:n].cpu(), [str(int(v)) for v in labels[:n]])


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, classes: int = 10) -> torch.Tensor:
    """``m[true, pred]`` counts; a class outside ``[0, classes)`` raises ``ValueError`` (it would be miscounted)."""
    for name, values in (("predictions", preds), ("labels", labels)):
        if len(values) and not 0 <= int(values.min()) <= int(values.max()) < classes:
            raise ValueError(f"{name} must be classes 0 to {classes - 1}, got {int(values.min())} to "
                             f"{int(values.max())}")
    return torch.bincount(labels * classes + preds, minlength=classes * classes).reshape(classes, classes)


def error_report(preds: torch.Tensor, labels: torch.Tensor, top: int = 8) -> str:
    """Accuracy, the error count, errors per true class, the most frequent confusions and the full confusion
    matrix, as text: the numbers an analysis quotes, never read off a picture."""
    if not len(labels):
        raise ValueError("error_report: no predictions and labels (empty tensors)")
    m = confusion_matrix(preds, labels)
    errors = m.clone().fill_diagonal_(0)
    n, wrong = len(labels), int(errors.sum())
    # most frequent first; ties in class order
    pairs = sorted(((int(errors[t, p]), t, p) for t in range(10) for p in range(10) if errors[t, p]),
                   key=lambda c_t_p: (-c_t_p[0], c_t_p[1], c_t_p[2]))
    lines = [f"accuracy {100 * (n - wrong) / n:.2f} % ({n - wrong:,} of {n:,}); {wrong} errors",
             "errors per true class: " + "  ".join(f"{t}:{int(errors[t].sum())}" for t in range(10)),
             "most frequent (true -> predicted: count): " + ", ".join(f"{t}->{p}: {c}" for c, t, p in pairs[:top]),
             "confusion matrix (rows: true class, columns: predicted class):",
             "true " + "".join(f"{p:>6}" for p in range(10))]
    lines += [f"{t:>4} " + "".join(f"{int(m[t, p]):>6}" for p in range(10)) for t in range(10)]
    return "\n".join(lines)


def plot_confusion(model: nn.Module, loader, device: torch.device):
    """Confusion matrix of the test set, errors only in colour so the few mistakes are visible."""
    import matplotlib.pyplot as plt

    _, preds, labels = predict(model, loader, device)
    m = confusion_matrix(preds, labels)
    errors = m.clone().fill_diagonal_(0)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(errors, cmap="Reds")
    for t in range(10):
        for p in range(10):
            ax.text(p, t, int(m[t, p]), ha="center", va="center", fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10),
           title=f"confusion matrix ({int(errors.sum())} errors)")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------
# Receptive field
# ---------------------------------------------------------------------------------------------------------

@dataclass
class RFRow:
    """One spatial layer: output size ``n``, ``jump`` (input pixels between adjacent outputs), RF ``rf``."""

    layer: str
    kind: str
    kernel: int
    stride: int
    padding: int
    n: int
    jump: int
    rf: int


def _square(name: str, what: str, value) -> int:
    """One side of a square kernel, stride, padding or dilation; a layer that differs per axis is refused."""
    if isinstance(value, tuple):
        if len(set(value)) != 1:
            raise ValueError(f"{name}: {what} {value} differs per axis; receptive_field handles square layers only")
        return value[0]
    return value


def receptive_field(model: nn.Module, input_size: int = 28) -> list[RFRow]:
    """Output size, jump and receptive field after every Conv2d / MaxPool2d / AvgPool2d / global pool.

    Pure arithmetic over the modules in registration order, which for S7's models is forward order:
    ``n_out = (n + 2p - d(k-1) - 1) // s + 1`` (rounded up instead under a pool's ``ceil_mode``, as torch does),
    ``rf_out = rf + d(k-1) * jump``, ``jump_out = jump * s``. A conv with ``padding="same"`` keeps ``n``.
    An ``AdaptiveAvgPool2d(1)`` or ``AdaptiveMaxPool2d(1)`` (a global pool) is a pool whose kernel is the whole
    current map. A layer whose kernel, stride, padding or dilation differs per axis, an adaptive pool to more than
    one pixel, and an input too small for the model raise ``ValueError`` instead of giving wrong numbers.
    """
    n, jump, rf = input_size, 1, 1
    rows = [RFRow("input", "-", 0, 0, 0, n, jump, rf)]
    for name, m in model.named_modules():
        ceil = same = False
        if isinstance(m, nn.Conv2d):
            k, s, d = (_square(name, w, v) for w, v in (("kernel", m.kernel_size), ("stride", m.stride),
                                                         ("dilation", m.dilation)))
            same = m.padding == "same"
            p = (d * (k - 1) // 2 if same else 0 if m.padding == "valid"  # "same": the left side's padding
                 else _square(name, "padding", m.padding))
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            k, s, p = (_square(name, w, v) for w, v in (("kernel", m.kernel_size),
                                                         ("stride", m.stride or m.kernel_size),
                                                         ("padding", m.padding)))
            d, ceil = _square(name, "dilation", getattr(m, "dilation", 1)), m.ceil_mode
        elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            if _square(name, "output size", m.output_size) != 1:
                raise ValueError(f"{name}: an adaptive pool to {m.output_size} has no fixed kernel; receptive_field "
                                 "handles global pools (output size 1) only")
            k, s, p, d = n, 1, 0, 1
        else:
            continue
        span = n + 2 * p - d * (k - 1) - 1
        if same:
            n_out = n
        elif ceil:  # torch: round up, but the last window must start inside the input or its left padding
            n_out = -(-span // s) + 1
            if (n_out - 1) * s >= n + p:
                n_out -= 1
        else:
            n_out = span // s + 1
        if n_out < 1:
            raise ValueError(f"{name}: the map would shrink to {n_out} pixels at input size {input_size}; the model "
                             "cannot run on an input this small")
        rf, n, jump = rf + d * (k - 1) * jump, n_out, jump * s
        kind = type(m).__name__
        if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels:
            kind += " (depthwise)"
        rows.append(RFRow(name, kind, k, s, p, n, jump, rf))
    return rows


def rf_table(rows: list[RFRow]) -> str:
    """A Markdown table of :func:`receptive_field`'s rows (renders in notebooks and on GitHub)."""
    lines = ["| layer | type | k | s | p | out size | jump | RF |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.layer} | {r.kind} | {r.kernel} | {r.stride} | {r.padding} | {r.n} | {r.jump} | {r.rf} |"
              for r in rows]
    return "\n".join(lines)


def measured_receptive_field(model: nn.Module, layer: str, input_size: int) -> int:
    """The RF of one central output unit of ``layer``, measured with gradients on a linearised copy.

    The copy turns max-pools into average pools of the same geometry, ReLU and dropout into identities,
    BatchNorm into an identity and all conv weights into ones, so every input pixel the unit can see has a
    strictly positive gradient and no other pixel has one. The width of that region is the RF (it is
    clipped at the image border: use an ``input_size`` large enough for the layer asked about).
    """
    import copy

    net = copy.deepcopy(model).cpu().eval()

    def linearise(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, nn.MaxPool2d):
                setattr(parent, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
            elif isinstance(child, (nn.ReLU, nn.Dropout, nn.Dropout2d, nn.BatchNorm2d)):
                setattr(parent, name, nn.Identity())
            else:
                linearise(child)

    linearise(net)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    captured: list[torch.Tensor] = []
    handle = dict(net.named_modules())[layer].register_forward_hook(lambda m, i, o: captured.append(o))
    x = torch.ones(1, net_in_channels(net), input_size, input_size, requires_grad=True)
    net(x)
    handle.remove()
    out = captured[0]
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    hit = (x.grad[0, 0] != 0).nonzero()
    return int(hit[:, 0].max() - hit[:, 0].min() + 1)


def net_in_channels(model: nn.Module) -> int:
    """Input channels of the first conv."""
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels


# ---------------------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------------------

def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def summary(model: nn.Module, input_size: tuple[int, int, int] = (1, 28, 28)) -> None:
    """torchsummary's table, safely on any machine.

    torchsummary wants the device as the string "cuda" or "cpu", builds its input on that device and runs the
    model in whatever mode it is in (so a model in train mode would update BatchNorm statistics). A CPU copy in
    eval mode avoids both pitfalls and works on CUDA, MPS and CPU machines alike.
    """
    import copy

    from torchsummary import summary as torchsummary_summary

    torchsummary_summary(copy.deepcopy(model).cpu().eval(), input_size, device="cpu")
