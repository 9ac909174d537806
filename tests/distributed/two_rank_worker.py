"""What each rank runs in ``test_two_ranks.py`` (not a test module): ``gpudl launch -n 2
two_rank_worker.py SCENARIO OUT``.

``train``: (a) a float64 MLP, per-rank batch 4, validation data that does not split
evenly, a checkpoint every epoch and a CSV log; (b) the same run stopped after epoch 2
and resumed from its checkpoint under 2 ranks, and (e) a 1-process run's checkpoint
resumed under 2 ranks; (c) 63 rows (odd: one row trimmed per
epoch); (d) BatchNorm with and without ``sync_state``. Each rank writes its trees and
logs to ``OUT/<part>_rank<r>.npz`` / ``.json``; the test compares them across ranks and
with a one-process run.

``match``: part (a) alone at per-rank batch ``8 / size`` (the oversubscribed 4-rank run).

``raise``: rank 1 raises in its third loss_fn call while rank 0 goes on to the gradient
allreduce; ``gpudl launch`` must end both, printing the traceback.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

import gpudl as gd
from gpudl import nn, optim
from gpudl.train import CSVLogger, ModelCheckpoint


def data(n: int = 64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    return (x, y), (x[:21] + 0.1, y[:21])


def mlp(batchnorm: bool = False):
    return nn.Sequential([nn.Dense(8)] + ([nn.BatchNorm1d()] if batchnorm else [])
                         + [nn.ReLU(), nn.Dense(3)])


def fit(epochs: int, batch_size: int, n: int = 64, callbacks=(), resume_from=None,
        batchnorm: bool = False, sync_state: bool = False, distributed="auto"):
    """The run every part of the test makes (also called in the test process)."""
    train, val = data(n)
    return gd.fit(mlp(batchnorm), train, loss="cross_entropy",
                  optimizer=optim.sgd(0.1, momentum=0.9), epochs=epochs,
                  batch_size=batch_size, validation_data=val, metrics=["accuracy", "f1"],
                  callbacks=list(callbacks), key=0, resume_from=resume_from, device="cpu",
                  sync_state=sync_state, distributed=distributed, verbose=1)


def save(out: str, part: str, rank: int, history) -> None:
    trees = {f"params/{p}": np.asarray(v) for p, v in gd.tree.flatten_with_paths(history.params)}
    trees.update({f"state/{p}": np.asarray(v)
                  for p, v in gd.tree.flatten_with_paths(history.state)})
    np.savez(os.path.join(out, f"{part}_rank{rank}.npz"), **trees)
    with open(os.path.join(out, f"{part}_rank{rank}.json"), "w") as f:
        json.dump({"history": history.history, "step": history.step}, f)


def train(out: str, rank: int) -> None:
    a = fit(3, 4, callbacks=[ModelCheckpoint(os.path.join(out, "a-{epoch}.npz"),
                                             best_only=False),
                             CSVLogger(os.path.join(out, "a.csv"))])
    save(out, "a", rank, a)
    ck = os.path.join(out, "b.npz")
    fit(2, 4, callbacks=[ModelCheckpoint(ck, best_only=False),
                         CSVLogger(os.path.join(out, "b.csv"))])
    c = fit(3, 4, callbacks=[ModelCheckpoint(ck, best_only=False),
                             CSVLogger(os.path.join(out, "b.csv"))], resume_from=ck)
    save(out, "resumed", rank, c)
    # (e) a checkpoint of a 1-process run (batch 8, written by the test) resumed on 2 ranks
    save(out, "from_one", rank, fit(3, 4, resume_from=os.path.join(out, "one.npz")))
    save(out, "odd", rank, fit(2, 4, n=63))
    save(out, "bn", rank, fit(2, 4, batchnorm=True))
    save(out, "bn_sync", rank, fit(2, 4, batchnorm=True, sync_state=True))


def fail(rank: int) -> None:
    (x, y), _ = data()
    net = mlp()

    def loss_fn(params, state, batch, key):
        if rank == 1 and fail.calls == 2:
            raise RuntimeError("rank 1 fails in its third loss_fn call")
        fail.calls += 1
        out, state = net.apply(params, state, batch[0], train=True)
        return gd.functional.softmax_cross_entropy(out, batch[1]), (state, None)

    fail.calls = 0
    gd.fit(net, (x, y), loss_fn=loss_fn, optimizer=optim.sgd(0.1), epochs=2, batch_size=4,
           device="cpu", verbose=0)
    print(f"rank {rank} finished, which it must not", flush=True)


if __name__ == "__main__":
    scenario, out = sys.argv[1], sys.argv[2]
    comm = gd.distributed.init()
    assert comm.size > 1, f"run under gpudl launch -n 2 (or more), got {comm.size} rank"
    if scenario == "train":
        train(out, comm.rank)
    elif scenario == "match":
        save(out, "a", comm.rank, fit(3, 8 // comm.size))
    else:
        fail(comm.rank)
