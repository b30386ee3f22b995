"""What one run of a study costs on this machine, and what each economy buys, side by side.

The run is a sweep file's first setting (by default the ResNet20 study on 1/8 of Fashion-MNIST,
48 epochs). Each variant trains that config for three epochs through ``python -m resmooth
train`` with evaluation on the last epoch only, so that the trainer's own per-epoch clock gives
the seconds of one training epoch (epoch 2), of one test-plus-validation evaluation (epoch 3 less
epoch 2), and of the warm-up or compilation (epoch 1 less epoch 2). A whole run is then

    epochs x train + evaluations x eval + warm-up

with the evaluations the config asks for (``Config.evaluates``) or, for the baseline, every epoch.
Two trials at one thread each run at the same time in two processes; their cost per run is the
wall time of the pair over two. Prints each variant's projected minutes per run and its speed-up
over one eager trial at all threads evaluating every epoch.

Usage: ``python benchmarks/study_cost.py [experiments/fashion-mnist-resnet20.toml]``; needs the
dataset under ``$RESMOOTH_DATA`` (or ``--data-root``). Run it on a quiet machine: it measures time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from resmooth.lab.sweep import load_sweep

FIELDS_OF_A_PROBE = {"epochs": 3, "lr_drop": 1.0, "eval_every": 1000}


def probe(config: dict, threads: int, compile: bool, parallel: int) -> tuple[list[dict[str, float]], float]:
    """Start ``parallel`` trainers of ``config`` at once; their epoch clocks and the wall time."""
    config = {**config, **FIELDS_OF_A_PROBE, "compile": compile, "device": "cpu"}
    args = [f"--{k.replace('_', '-')}={v}" for k, v in config.items() if v is not None and not isinstance(v, bool)]
    args += [f"--{'' if v else 'no-'}{k.replace('_', '-')}" for k, v in config.items() if isinstance(v, bool)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-m", "resmooth", "train", *args, "--quiet", "--out", f"{tmp}/{i}"],
                                  env=env, stdout=subprocess.DEVNULL)
                 for i in range(parallel)]
        if any(p.wait() for p in procs):
            raise RuntimeError("a probe run failed (see its output above)")
        wall = time.perf_counter() - tic
        clocks = []
        for i in range(parallel):
            seconds = [json.loads(line)["seconds"] for line in Path(tmp, str(i), "metrics.jsonl").read_text().splitlines()]
            e1, e2, e3 = seconds[0], seconds[1] - seconds[0], seconds[2] - seconds[1]
            clocks.append({"train": e2, "eval": e3 - e2, "warmup": e1 - e2})
    return clocks, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", nargs="?", default="experiments/fashion-mnist-resnet20.toml")
    parser.add_argument("--data-root", help="default: $RESMOOTH_DATA")
    args = parser.parse_args()
    from resmooth.lab.config import Config

    sweep = load_sweep(args.sweep)
    setting = {**sweep.settings[0], "seed": sweep.first_seed}
    if args.data_root:
        setting["data_root"] = args.data_root
    config = Config.from_dict(setting)
    evaluations = sum(config.evaluates(e) for e in range(config.epochs))
    cores = os.cpu_count() or 1
    print(f"{sweep.name}: {config.model}, {config.epochs} epochs, subset {config.subset}, val_size {config.val_size}; "
          f"{cores} CPUs; {evaluations} of {config.epochs} epochs evaluated at eval_every={config.eval_every}")
    variants = [  # name, threads, compile, parallel trials, evaluations per run
        ("eager, 1 trial x all threads, every epoch evaluated", cores, False, 1, config.epochs),
        ("eager, 1 trial x all threads, sparse evaluation", cores, False, 1, evaluations),
        ("compiled, 1 trial x all threads, sparse evaluation", cores, True, 1, evaluations),
        (f"eager, {cores} trials x 1 thread, sparse evaluation", 1, False, cores, evaluations),
        (f"compiled, {cores} trials x 1 thread, sparse evaluation", 1, True, cores, evaluations),
    ]
    baseline = None
    print(f"\n{'variant':58s} {'train/epoch':>11s} {'eval':>6s} {'warm-up':>8s} {'min/run':>8s} {'speed-up':>8s}")
    for name, threads, compile, parallel, n_eval in variants:
        clocks, wall = probe(setting, threads, compile, parallel)
        mean = {k: sum(c[k] for c in clocks) / len(clocks) for k in clocks[0]}
        # Parallel trials share the machine: each run's own clock is the cost of one of `parallel` runs.
        minutes = (config.epochs * mean["train"] + n_eval * mean["eval"] + mean["warmup"]) / 60 / parallel
        baseline = baseline or minutes
        print(f"{name:58s} {mean['train']:10.1f}s {mean['eval']:5.1f}s {mean['warmup']:7.1f}s {minutes:8.2f} "
              f"{baseline / minutes:7.2f}x")


if __name__ == "__main__":
    main()
