"""`make demo`: train a two-layer MLP on generated data on the best available device.

It uses only the foundation: gd.value_and_grad and a plain SGD step written out by hand,
and prints the loss falling. Run: ``python -m gpudl.demo`` (or ``make demo``).
"""

from __future__ import annotations

import time

import numpy as np

import gpudl as gd
from gpudl import ops


def make_spirals(n_per_class: int = 200, classes: int = 3, seed: int = 0):
    """Interleaved 2-D spirals: not linearly separable, easy for a small MLP."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k in range(classes):
        r = np.linspace(0.05, 1.0, n_per_class)
        t = np.linspace(k * 4.0, (k + 1) * 4.0, n_per_class) + rng.normal(0, 0.2, n_per_class)
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
        ys.append(np.full(n_per_class, k))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def init_mlp(key, sizes):
    params = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        key, sub = gd.random.split(key)
        scale = np.sqrt(2.0 / n_in)  # He initialisation for the tanh/ReLU hidden layer
        params[f"fc{i + 1}"] = {
            "weight": gd.random.normal(sub, (n_out, n_in)) * scale,
            "bias": ops.zeros((n_out,)),
        }
    return params


def mlp(params, x):
    h = ops.tanh(x @ params["fc1"]["weight"].T + params["fc1"]["bias"])
    return h @ params["fc2"]["weight"].T + params["fc2"]["bias"]


def cross_entropy(logits, labels_onehot):
    log_probs = logits - ops.logsumexp(logits, axis=1, keepdims=True)
    return -ops.mean(ops.sum(log_probs * labels_onehot, axis=1))


def main(epochs: int = 300, lr: float = 0.5) -> float:
    device = gd.get_device()
    print(f"gpudl demo: two-layer MLP on 3-class spirals, device={device} ({gd.device_reason()})")
    x_np, y_np = make_spirals()
    x, y = gd.asarray(x_np), gd.asarray(ops.one_hot(y_np, 3))
    params = init_mlp(gd.random.key(0), [2, 64, 3])
    loss_and_grad = gd.value_and_grad(lambda p: cross_entropy(mlp(p, x), y))
    start = time.perf_counter()
    for epoch in range(epochs + 1):
        loss, grads = loss_and_grad(params)
        params = gd.tree.tree_map(lambda p, g: p - lr * g, params, grads)
        if epoch % 50 == 0:
            acc = float((ops.argmax(mlp(params, x), axis=1) == gd.asarray(y_np)).mean())
            print(f"  epoch {epoch:4d}  loss {float(loss):.4f}  train accuracy {acc:.3f}")
    gd.synchronize()
    print(f"done in {time.perf_counter() - start:.2f} s on {device}")
    return float(loss)


if __name__ == "__main__":
    main()
