"""The one call on a lent GPU (results/gpu/README.md): fixed jobs, in a fixed order, until a deadline.

    python3 results/gpu/queue.py --data-dir /tmp/mnist --out "$OUT" --deadline 540 --workers 12

Two solo jobs first, each alone on the GPU so that its times are clean: ``bench.py`` (two epochs of each input
pipeline) and one full ``train.py`` run of Model_3 (the time a user's run takes; Model_3 was design v12's when
this ran: Model_2's layers, no elastic distortion; run today, these commands would train design v33's). Then the pool: ``--workers``
jobs at a time, each a process of its own (one CPU thread each), started in the order of :func:`pool_jobs` and
never reordered by what earlier jobs showed. A job is not started when the median time of the pool jobs finished
so far says it would not end before the deadline; at the deadline, jobs still running are killed and listed as
unfinished (their partial logs are dropped). After every finished job, the results so far are packed into
``<out>/results.tar.gz`` (written atomically, so a call cut short still returns what finished) and the job list
with its times into ``<out>/queue.json``. Unpack the archive in the repository root. A later call with
``--resume <earlier queue.json>`` skips the jobs that call finished and goes on in the same order.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1].parent
HERE = "results/gpu"
PACKED = (HERE, "results/validation/v15")  # what comes back
CHECK_SEEDS = list(range(9601, 9641))       # design v12's Model_3 on the test set (README.md names them)
V15_SEEDS = list(range(47, 67))             # design v15's validation seeds (validation/v15/PLAN.md)
V15_ARMS = ("v15_reference", "v15_four_convs")
# the names utils.MNIST_FILES derives from torchvision, written out here: this launcher imports no torch
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


def solo_jobs(data: str) -> list[tuple[str, list[str], str]]:
    """(name, command, log) of the jobs that run alone."""
    return [("bench", ["bench.py", "--model", "Model_3", "--epochs", "2", "--data-dir", data, "--no-download",
                       "--out", HERE], f"{HERE}/bench_cuda.log"),
            ("timing_9201", ["train.py", "--model", "Model_3", "--seed", "9201", "--data-dir", data,
                             "--no-download", "--out", f"{HERE}/timing"], f"{HERE}/timing/seed9201.log")]


def pool_jobs(data: str) -> list[tuple[str, list[str], str]]:
    """The pool's jobs in their fixed order: design v12's first ten check seeds, then per validation seed its two
    arms and one more check seed (20 validation seeds, check seeds 9611-9630), then check seeds 9631-9640."""
    def check(seed: int):
        return (f"check_{seed}", ["train.py", "--model", "Model_3", "--seed", str(seed), "--data-dir", data,
                                  "--no-download", "--out", f"{HERE}/check"], f"{HERE}/check/seed{seed}.log")

    def arm(name: str, seed: int):
        return (f"{name}_{seed}", ["results/validation/run.py", name, str(seed), "--data-dir", data],
                f"results/validation/v15/{name}_seed{seed}.log")

    jobs = [check(s) for s in CHECK_SEEDS[:10]]
    for seed, extra in zip(V15_SEEDS, CHECK_SEEDS[10:30]):
        jobs += [arm(a, seed) for a in V15_ARMS] + [check(extra)]
    return jobs + [check(s) for s in CHECK_SEEDS[30:]]


class Parser(argparse.ArgumentParser):
    """Bad input: one line on stderr, exit 2 (as ``train.py``'s parser; not imported from there, because this file
    must not import torch: run as a script, its name shadows the standard library's ``queue``, which torch imports)."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def start(command: list[str], log: str) -> subprocess.Popen:
    (ROOT / log).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(ROOT / log, "w") as f:
        return subprocess.Popen([sys.executable, *command], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def pack(out: Path, record: dict) -> None:
    tmp = out / "results.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for folder in PACKED:
            if (ROOT / folder).exists():
                tar.add(ROOT / folder, arcname=folder)
    os.replace(tmp, out / "results.tar.gz")
    (out / "queue.json.tmp").write_text(json.dumps(record, indent=1))
    os.replace(out / "queue.json.tmp", out / "queue.json")


def main() -> int:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--deadline", type=float, required=True, help="seconds from start until jobs are killed")
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--resume", type=Path, help="an earlier call's queue.json: skip the jobs it finished (their "
                   "results unpacked in the repository), go on with the rest in the same order")
    args = p.parse_args()
    if args.workers < 1 or not 0 < args.deadline < float("inf"):
        p.error("--workers must be at least 1 and --deadline a positive number of seconds")
    if not args.out.is_dir():
        p.error(f"--out {args.out}: no such folder; create it (on the device machine: $OUT)")
    skip = set()
    if args.resume:
        try:
            skip = {job["job"] for job in json.loads(args.resume.read_text())["done"]}
        except (OSError, ValueError, KeyError, TypeError) as error:
            p.error(f"--resume {args.resume}: not the queue.json of an earlier call ({error.__class__.__name__}); "
                    "give the file a call wrote to its --out")
    # checked here, as the jobs will see it (they run in the repository root): each would fail over a committed log
    raw = ROOT / args.data_dir / "MNIST" / "raw"
    if not all((raw / name).is_file() for name in MNIST_FILES):
        p.error(f"--data-dir {args.data_dir}: no MNIST in {raw} (a relative path is taken from the repository "
                "root, where the jobs run); pass the folder that holds MNIST/raw/*-ubyte")
    t0 = time.monotonic()
    record = {"workers": args.workers, "deadline_s": args.deadline, "done": [], "unfinished": [], "not_started": []}

    def finished(name: str, proc: subprocess.Popen, began: float, log: str, pool: bool) -> None:
        record["done"].append({"job": name, "rc": proc.returncode, "start_s": round(began - t0, 1),
                               "wall_s": round(time.monotonic() - began, 1), "pool": pool})
        print(f"{time.monotonic() - t0:6.0f}s  {name}: rc {proc.returncode}, {time.monotonic() - began:.0f} s",
              flush=True)
        if proc.returncode:
            print((ROOT / log).read_text()[-2000:], flush=True)
        pack(args.out, record)

    for name, command, log in solo_jobs(args.data_dir):
        if name in skip:
            continue
        began = time.monotonic()
        proc = start(command, log)
        try:
            proc.wait(max(1.0, args.deadline - (began - t0)))
        except subprocess.TimeoutExpired:
            stop(proc)
            record["unfinished"].append(name)
            (ROOT / log).unlink(missing_ok=True)
            continue
        finished(name, proc, began, log, pool=False)

    queue, running = [job for job in pool_jobs(args.data_dir) if job[0] not in skip], []
    while queue or running:
        now = time.monotonic()
        if now - t0 >= args.deadline:
            for name, proc, _, log in running:
                stop(proc)
                record["unfinished"].append(name)
                (ROOT / log).unlink(missing_ok=True)
            running = []
            break
        for job in list(running):
            name, proc, began, log = job
            if proc.poll() is not None:
                running.remove(job)
                finished(name, proc, began, log, pool=True)
        walls = [d["wall_s"] for d in record["done"] if d["pool"]]
        expected = statistics.median(walls) if walls else 0.0
        while queue and len(running) < args.workers and time.monotonic() + expected < t0 + args.deadline:
            name, command, log = queue.pop(0)
            running.append((name, start(command, log), time.monotonic(), log))
        if queue and not running:
            break  # nothing can finish before the deadline
        time.sleep(0.5)
    record["not_started"] = [name for name, _, _ in queue]
    record["total_s"] = round(time.monotonic() - t0, 1)
    pack(args.out, record)
    print(f"done {len(record['done'])}, unfinished {len(record['unfinished'])}, not started "
          f"{len(record['not_started'])}, {record['total_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
