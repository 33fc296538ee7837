"""What each activation costs per training step of design v26's model alone (no data pipeline, no evaluation).

    OMP_NUM_THREADS=1 python results/validation/v26/activation_cost.py   # writes activation_cost.json here

Design v4's model (Model_3's layers until design v33; ``run.design_v4_model``) with ReLU, LeakyReLU(0.1), SiLU or GELU in every conv_block; one SGD step on a
fixed random batch of 64 in the ``channels_last`` layout under CPU bf16 autocast, as Model_3's recipe trains on
this machine. The variants alternate block by block (30 steps per block, 8 blocks, after 10 warm-up steps each),
so a change in the machine's speed falls on all of them; the median block is reported.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import run  # noqa: E402  (results/validation/run.py: design v26's arms)
import utils  # noqa: E402

ACTIVATIONS = {"ReLU": nn.ReLU, "LeakyReLU(0.1)": lambda: nn.LeakyReLU(0.1), "SiLU": nn.SiLU, "GELU": nn.GELU}


def main() -> int:
    torch.manual_seed(0)
    x = torch.randn(64, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,))
    nets = {name: run.design_v4_model(act).to(memory_format=torch.channels_last)
            for name, act in ACTIVATIONS.items()}
    optimizers = {name: torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9) for name, net in nets.items()}

    def step(name: str) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.nll_loss(nets[name](x), y)
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()

    for name in nets:
        for _ in range(10):
            step(name)
    blocks: dict[str, list[float]] = {name: [] for name in nets}
    for _ in range(8):
        for name in nets:
            start = time.perf_counter()
            for _ in range(30):
                step(name)
            blocks[name].append((time.perf_counter() - start) / 30 * 1000)
    result = {"device": utils.device_name(torch.device("cpu")), "torch": torch.__version__,
              "ms_per_step_median": {n: round(statistics.median(b), 2) for n, b in blocks.items()},
              "ms_per_step_blocks": {n: [round(t, 2) for t in b] for n, b in blocks.items()}}
    utils.write_json_atomic(HERE / "activation_cost.json", result)
    for name, ms in result["ms_per_step_median"].items():
        print(f"{name:>15}: {ms:.2f} ms per step (median of 8 blocks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
