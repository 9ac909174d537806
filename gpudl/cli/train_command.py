"""``gpudl train``: train an image classifier on a dataset, report test accuracy, save weights.

The default recipe is the one ``make demo`` runs and that reaches 97 % on ``mnist_5k`` in
5 epochs: LeNet-5 with ReLU and max pooling, Adam at lr 8e-3 annealed to 0 over the run
(cosine), batch 64. ``--lenet-variant 1998`` builds the sigmoid/average-pooling LeNet-5
the courses draw after LeCun et al. (1998), which learns far more slowly: with this recipe
it is still at chance (10 %) after 5 epochs on ``mnist_5k`` (25 % with ``--lr 0.002``).

The data is split 70/10/20 (train/validation/test) with ``--seed`` for a shipped dataset;
a local one (``--data-dir``) keeps its own test split and gives 10 % of its training split
to validation. The final weights are written atomically with ``gd.save`` as a torch-style
``state_dict`` (``conv1.weight``; BatchNorm running statistics next to their layer's
weights): ``gd.load(path, like=params)`` reads them back.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from gpudl.cli.args import (
    UsageError,
    device_name,
    finite_positive_float,
    image_datasets,
    model_checker,
    name_checker,
    non_negative_int,
    output_folder,
    positive_int,
    weights_path,
)
from gpudl.train.callbacks import Callback

DESCRIPTION = """\
Train an image classifier, print its accuracy on held-out test images and save the final
weights. The default recipe is what `make demo` runs (about 97 % on mnist_5k in 5 epochs):
LeNet-5 with ReLU and max pooling, Adam at lr 0.008 annealed to 0 (cosine), batch 64."""

# Optimizer -> its default learning rate. SGD uses momentum 0.9.
OPTIMIZERS = {"adam": 8e-3, "sgd": 0.05}
SCHEDULES = ("cosine", "constant")
# lenet5's form: "modern" (what make demo trains) or "1998" (sigmoid and average pooling).
LENET_VARIANTS = {"modern": {"activation": "relu", "pool": "max"},
                  "1998": {"activation": "sigmoid", "pool": "avg"}}


def add_arguments(t: argparse.ArgumentParser) -> None:
    """The flags of ``gpudl train``, each checked by its ``type=``."""
    from gpudl import models

    datasets = image_datasets()
    shipped = [n for n, local in datasets.items() if not local]
    local = [n for n, is_local in datasets.items() if is_local]
    t.add_argument("--model", type=model_checker("gpudl train"), default=None, metavar="NAME",
                   help="image classifier: " + ", ".join(models.IMAGE_CLASSIFIERS)
                   + " (default: the first one built for the dataset's image size, else mlp; "
                   "lenet5 for mnist_5k, mlp for digits)")
    t.add_argument("--dataset", type=name_checker("dataset", datasets), default="mnist_5k",
                   metavar="NAME", help="shipped: " + ", ".join(shipped) + "; from local files "
                   "(with --data-dir): " + ", ".join(local) + " (default: mnist_5k)")
    t.add_argument("--data-dir", default=None, metavar="FOLDER",
                   help="the folder holding a local dataset's files")
    t.add_argument("--lenet-variant", type=name_checker("LeNet-5 variant", LENET_VARIANTS),
                   default=None, metavar="|".join(LENET_VARIANTS),
                   help="modern: ReLU + max pooling (default); 1998: sigmoid + average pooling, "
                   "which needs many more epochs")
    t.add_argument("--epochs", type=positive_int, default=5, help="default 5")
    t.add_argument("--batch-size", type=positive_int, default=64, help="default 64")
    t.add_argument("--optimizer", type=name_checker("optimizer", OPTIMIZERS), default="adam",
                   metavar="|".join(OPTIMIZERS), help="adam (default) or sgd (momentum 0.9)")
    t.add_argument("--lr", type=finite_positive_float, default=None,
                   help="learning rate (default: " + ", ".join(
                       f"{v:g} for {k}" for k, v in OPTIMIZERS.items()) + ")")
    t.add_argument("--schedule", type=name_checker("schedule", SCHEDULES), default="cosine",
                   metavar="|".join(SCHEDULES),
                   help="cosine: anneal the lr to 0 over the run (default); constant")
    t.add_argument("--device", type=device_name,
                   default=None, metavar="auto|cpu|cuda", help="default: env GPUDL_DEVICE, else auto")
    t.add_argument("--seed", type=non_negative_int, default=0,
                   help="data split, initialization, shuffling and dropout (default 0)")
    save = t.add_mutually_exclusive_group()
    save.add_argument("--out", "--save", dest="out", type=weights_path, default=None,
                      metavar="FILE", help="where to save the trained weights, .npz or "
                      ".safetensors (default: MODEL_DATASET.npz in the current folder)")
    save.add_argument("--no-save", action="store_true", help="do not save the weights")
    t.add_argument("--checkpoint-dir", type=output_folder, default=None, metavar="FOLDER",
                   help="write last.npz there after every epoch (for --resume)")
    t.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint-dir's last.npz when it exists; --seed and "
                   "--dataset must be the ones that wrote it (the seed also splits the data)")
    t.add_argument("--verbose", type=non_negative_int, default=1,
                   help="0: quiet, 1: progress per epoch (default)")


def choose_model(ns: argparse.Namespace, image_shape: tuple[int, ...]) -> tuple[str, dict]:
    """``(model name, builder keyword arguments)`` for ``ns`` and the dataset's (C, H, W)."""
    from gpudl import models

    fits = [n for n, shape in models.IMAGE_CLASSIFIERS.items() if shape == tuple(image_shape)]
    name = ns.model or (fits[0] if fits else "mlp")
    if name != "mlp" and name not in fits:  # an MLP flattens any image
        c, h, w = models.IMAGE_CLASSIFIERS[name]
        raise UsageError(
            f"{name} expects {h}x{w} images with {c} channel(s) but {ns.dataset} has "
            f"{image_shape[1]}x{image_shape[2]} with {image_shape[0]}; use --model "
            + " or --model ".join(dict.fromkeys(fits + ["mlp"])))
    if ns.lenet_variant and name != "lenet5":
        raise UsageError(f"--lenet-variant applies to lenet5, not {name}")
    kwargs = dict(LENET_VARIANTS[ns.lenet_variant or "modern"]) if name == "lenet5" else {}
    return name, kwargs


def build_optimizer(ns: argparse.Namespace, total_steps: int):
    """``(optimizer, description)`` from ``--optimizer``, ``--lr`` and ``--schedule``."""
    from gpudl import optim

    lr = OPTIMIZERS[ns.optimizer] if ns.lr is None else ns.lr
    rate = optim.cosine_annealing(lr, t_max=total_steps) if ns.schedule == "cosine" else lr
    opt = optim.adam(rate) if ns.optimizer == "adam" else optim.sgd(rate, momentum=0.9)
    how = f", cosine-annealed over {total_steps} steps" if ns.schedule == "cosine" else ""
    return opt, f"{ns.optimizer} lr {lr:g}{how}"


def read_dataset(name: str, data_dir: str | None, split: str = "train", or_else: str = ""):
    """``(x, y)`` of dataset ``name``: a shipped one whole, a local one's ``split`` read
    from ``data_dir`` (checked: one-line UsageErrors, ``or_else`` added to the hint for a
    missing ``--data-dir``)."""
    from gpudl import data

    loader = getattr(data, name)
    if not image_datasets()[name]:  # shipped
        if data_dir:
            raise UsageError(f"--data-dir applies to local datasets; {name} is shipped")
        return loader()
    if not data_dir:
        raise UsageError(f"{name} reads local files: add --data-dir FOLDER "
                         f"(see help(gpudl.data.{name}) for the file names){or_else}")
    if not os.path.isdir(data_dir):
        raise UsageError(f"--data-dir {data_dir!r} is not a folder")
    return loader(data_dir, split=split)


def image_shape(name: str, data_dir: str | None, or_else: str = "") -> tuple[int, int, int]:
    """The (C, H, W) of dataset ``name``'s images, as ``gpudl train`` sees them."""
    x, _ = read_dataset(name, data_dir, or_else=or_else)
    return tuple(int(n) for n in x.shape[1:])  # type: ignore[return-value]


def load_data(ns: argparse.Namespace):
    """``((x, y) train, validation, test)`` of ``--dataset``."""
    from gpudl import data

    x, y = read_dataset(ns.dataset, ns.data_dir)
    if not image_datasets()[ns.dataset]:  # shipped
        return data.train_val_test_split(x, y, val=0.1, test=0.2, seed=ns.seed)
    train, val, _ = data.train_val_test_split(x, y, val=0.1, test=0, seed=ns.seed)
    return train, val, read_dataset(ns.dataset, ns.data_dir, split="test")


class RunSettings(Callback):
    """Saves ``--seed`` and ``--dataset`` in every checkpoint, so ``--resume`` can refuse
    a run that would split the data differently (its test set would overlap the rows the
    checkpoint was trained on)."""

    adds_logs = ()

    def __init__(self, seed: int, dataset: str):
        self.settings = {"seed": int(seed), "dataset": str(dataset)}

    def state_dict(self) -> dict[str, Any]:
        return dict(self.settings)


def check_resume(ns: argparse.Namespace, path: str, out=print) -> None:
    """Refuse ``--resume`` from ``path`` when it was written with another ``--seed`` or
    ``--dataset``."""
    from gpudl.train.checkpoint import Checkpoint

    ck = Checkpoint(path, who="gpudl train --resume")
    saved = [e["state"] for e in ck.callback_entries() if e["class"] == RunSettings.__qualname__]
    if not saved:
        out(f"note: {path} does not record the --seed and --dataset that wrote it (an older "
            "checkpoint); make sure they match, or the test images overlap the trained ones")
        return
    for flag in ("dataset", "seed"):
        was, now = saved[0].get(flag), getattr(ns, flag)
        if was is not None and was != now:
            raise UsageError(
                f"--resume: {path} was written with --{flag} {was}, this run has --{flag} "
                f"{now} (the seed and dataset decide the train/validation/test split); "
                f"resume with --{flag} {was}, or give another --checkpoint-dir to start anew")


def _state_dict(params: Any, state: Any) -> Any:
    """params and model state merged per layer, as torch's ``state_dict`` holds them."""
    if not isinstance(params, dict) or not isinstance(state, dict):
        return params if not state else {"params": params, "state": state}
    merged = dict(params)
    for key, value in state.items():
        merged[key] = _state_dict(merged[key], value) if key in merged else value
    return merged


def run(ns: argparse.Namespace, out=print) -> dict[str, Any]:
    """Train as ``ns`` says; returns test accuracy, seconds, model name and weights path."""
    import gpudl as gd
    from gpudl import models
    from gpudl.backend import probe_cuda
    from gpudl.train import ModelCheckpoint, evaluate, fit

    if ns.resume and not ns.checkpoint_dir:
        raise UsageError("--resume needs --checkpoint-dir (the folder of the checkpoint)")
    if ns.device == "cuda" and not probe_cuda()[0]:
        raise UsageError(f"--device cuda is unusable here: {probe_cuda()[1]}; use --device cpu "
                         "(or auto), and see `gpudl doctor`")
    if ns.device:
        gd.set_device(ns.device)
    comm = gd.distributed.init()  # under `gpudl launch -n N`: N ranks, rank 0 reports
    if comm.rank != 0:
        def out(*args, **kwargs):
            return None
    (xtr, ytr), (xva, yva), (xte, yte) = load_data(ns)
    name, kwargs = choose_model(ns, xtr.shape[1:])
    path = None if ns.no_save else (ns.out or f"{name}_{ns.dataset}.npz")
    if path:  # before training: a run is not lost to a folder that cannot be written
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--out {path!r}: cannot create its folder ({exc.strerror})") from exc
        if not os.access(folder, os.W_OK):
            raise UsageError(f"--out {path!r}: the folder {folder!r} is not writable")
    model = models.get_model(name, **kwargs)
    # the schedule's length in steps: each rank steps through its shard (batch is per rank)
    opt, how = build_optimizer(ns, ns.epochs * -(-(len(ytr) // comm.size) // ns.batch_size))
    callbacks, resume = [], None
    if ns.checkpoint_dir:
        try:
            os.makedirs(ns.checkpoint_dir, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--checkpoint-dir {ns.checkpoint_dir!r}: cannot create it "
                             f"({exc.strerror}); give another folder") from exc
        last = os.path.join(ns.checkpoint_dir, "last.npz")
        callbacks += [RunSettings(ns.seed, ns.dataset), ModelCheckpoint(last, best_only=False)]
        resume = last if ns.resume and os.path.exists(last) else None
        if resume:
            check_resume(ns, resume, out)
    form = f" ({kwargs['activation']}, {kwargs['pool']} pooling)" if kwargs else ""
    out(f"training {name}{form} on {ns.dataset} ({len(ytr)} train / {len(yva)} validation / "
        f"{len(yte)} test images) on {gd.get_device()}: {how}, batch {ns.batch_size}, "
        f"{ns.epochs} epoch{'s' if ns.epochs != 1 else ''}")
    if gd.get_device() == "cpu":  # the one CPU slow path doctor finds that costs ~2x here
        from gpudl.bench import blas_kernels

        slow = blas_kernels.current_problem()
        if slow:
            out(f"note: {slow[0]}; `gpudl doctor` names the fix")
    start = time.perf_counter()
    history = fit(model, (xtr, ytr), loss="cross_entropy", optimizer=opt, epochs=ns.epochs,
                  batch_size=ns.batch_size, validation_data=(xva, yva), metrics=["accuracy"],
                  callbacks=callbacks, key=gd.random.key(ns.seed), resume_from=resume,
                  verbose=ns.verbose)
    seconds = time.perf_counter() - start
    test = evaluate(model, history.params, history.state, (xte, yte), metrics=["accuracy"])
    out(f"test accuracy: {test['accuracy']:.4f} on {len(yte)} held-out images "
        f"(training took {seconds:.1f} s on {gd.get_device()})")
    if path and comm.rank == 0:  # the ranks hold the same weights
        gd.save(path, _state_dict(history.params, history.state))
        out(f"saved the trained weights to {path} (gd.load reads them back)")
    return {"accuracy": float(test["accuracy"]), "seconds": seconds, "model": name,
            "path": path, "history": history}
