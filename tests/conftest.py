"""Shared fixtures: small MNIST-format files written to a temp folder, so the real loading code is tested."""
from __future__ import annotations

import importlib.util
import os
import socket
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

def load_script(relative: str, name: str):
    """A script of the repository (``results/.../*.py``: scripts, not a package) as a module named ``name``."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RAW_NAMES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 uint8 images of 10 classes: a stroke of one of 5 orientations and 2 lengths, shifted, noised."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = np.zeros((n, 28, 28), np.float32)
    t = np.arange(-10, 11)
    for i, k in enumerate(labels):
        half = 4 if k < 5 else 9
        s = t[np.abs(t) <= half]
        dy, dx = rng.integers(-3, 4, 2)
        strokes = {0: [(0 * s, s)], 1: [(s, 0 * s)], 2: [(s, s)], 3: [(s, -s)], 4: [(0 * s, s), (s, 0 * s)]}[k % 5]
        for ys, xs in strokes:
            images[i, 14 + dy + ys, 14 + dx + xs] = rng.uniform(0.7, 1.0)
    images = np.clip(images * 255 + rng.normal(0, 8, images.shape), 0, 255).astype(np.uint8)
    return images, labels


def write_idx(root: Path, train: bool, images: np.ndarray, labels: np.ndarray) -> None:
    """Write ``images`` and ``labels`` in the IDX format that MNIST uses, under ``root/MNIST/raw``."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    img_name, lbl_name = RAW_NAMES[train]
    n, h, w = images.shape
    (raw / img_name).write_bytes(struct.pack(">IIII", 0x803, n, h, w) + images.astype(np.uint8).tobytes())
    (raw / lbl_name).write_bytes(struct.pack(">II", 0x801, n) + labels.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """A folder laid out like MNIST (600 train, 200 test images of the synthetic task)."""
    root = tmp_path_factory.mktemp("mnist")
    write_idx(root, True, *synthetic_digits(600, seed=1))
    write_idx(root, False, *synthetic_digits(200, seed=2))
    return root


@pytest.fixture(scope="session")
def real_mnist() -> Path:
    """The real MNIST folder from ``MNIST_DIR``; the test is skipped when it is unset."""
    path = os.environ.get("MNIST_DIR")
    if not path:
        pytest.skip("MNIST_DIR is not set")
    return Path(path)


LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _refuse_remote(connect):
    """``socket.socket.connect`` that refuses any address but this machine's (a notebook kernel's own sockets)."""
    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            raise RuntimeError(f"a test tried to reach {address[0]}: tests must not use the network")
        return connect(self, address)
    return guarded


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test runs with remote connections refused in this process (a download would fail loudly here,
    not pass on a machine that happens to be online). Subprocesses are started with --no-download or
    download=False."""
    lookup = socket.getaddrinfo

    def local_lookup(host, *args, **kwargs):  # a name lookup comes before any connection
        if host not in LOOPBACK and host is not None:
            raise RuntimeError(f"a test tried to look up {host}: tests must not use the network")
        return lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_lookup)
    monkeypatch.setattr(socket.socket, "connect", _refuse_remote(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse_remote(socket.socket.connect_ex))
