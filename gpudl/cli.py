"""``gpudl train | bench | doctor``.

Examples:
    gpudl doctor
    gpudl bench --model lenet5 --batch-size 128 --steps 50 --devices cpu,cuda --json out.json
    gpudl train --model lenet5 --dataset mnist_5k --epochs 5 --batch-size 64 --lr 0.05
    gpudl train --dataset digits --epochs 3          # 8x8 digits: an MLP by default
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

DATASETS = ("mnist_5k", "digits")
# The model each dataset gets when --model is not given; lenet5 needs 28x28 inputs.
DEFAULT_MODEL = {"mnist_5k": "lenet5", "digits": "mlp"}


def doctor(out=print) -> int:
    """Print versions, the device choice and why, GPU, driver, memory, BLAS; name each fix."""
    import gpudl as gd
    from gpudl.bench.device_info import machine_info

    info = machine_info()
    problems = []
    out(f"gpudl {info['gpudl_version']}   Python {info['python']}   NumPy {info['numpy_version']}")
    out(f"CuPy: {info.get('cupy_version', info.get('cupy'))}")
    out(f"device: {gd.get_device()} ({gd.device_reason()})")
    if info.get("cuda_usable"):
        out(f"GPU: {info.get('gpu_name')} (compute {info.get('compute_capability')}), "
            f"driver CUDA {info.get('driver_cuda')}, CuPy runtime {info.get('cuda_runtime')}")
        if "memory_total_mib" in info:
            out(f"GPU memory (NVML): {info['memory_used_mib']} / {info['memory_total_mib']} MiB used")
        else:
            out(f"GPU memory: {info.get('nvml')}")
    else:
        out(f"GPU: none usable ({info['cuda_reason']})")
        reason = info["cuda_reason"]
        if "not installed" in reason:
            problems.append("CuPy is missing: pip install 'gpudl[cuda13]' (or [cuda12] for a "
                            "CUDA 12 driver)")
        elif "too old" in reason:
            problems.append("update the NVIDIA driver, or install cupy-cuda12x for an older one")
        elif "NVRTC" in reason:
            problems.append("install the NVRTC wheel: pip install nvidia-cuda-nvrtc")
        elif "driver" in reason or "no CUDA GPU" in reason:
            problems.append("gpudl runs on the CPU (NumPy). To use an NVIDIA GPU, install its "
                            "driver (`nvidia-smi` must work), then `pip install "
                            "'gpudl[cuda13]'` (or [cuda12])")
        else:
            problems.append("see the reason above; `pip install 'gpudl[cuda13]'` needs a "
                            "working NVIDIA driver and GPU")
    out(f"CPU: {info['cpu']}, {info['cpu_count']} cores; BLAS {info['blas']} "
        f"threads {info['blas_threads']}")
    try:
        from gpudl.cuda import kernel_dir

        out(f"kernels: {kernel_dir()}")
    except Exception as exc:  # a broken install
        problems.append(f"kernel sources not found ({exc}); reinstall gpudl")
    for p in problems:
        out(f"fix: {p}")
    if not problems:
        out("no problems found")
    return 0


def _load_dataset(name: str):
    from gpudl import data

    if name == "mnist_5k":
        return data.mnist_5k()
    if name == "digits":
        return data.digits()
    raise SystemExit(f"gpudl train: unknown dataset {name!r}; choose from {DATASETS}")


def train(ns: argparse.Namespace) -> int:
    import gpudl as gd
    from gpudl import data, models, optim
    from gpudl.train import ModelCheckpoint, evaluate, fit

    if ns.device:
        gd.set_device(ns.device)
    model_name = ns.model or DEFAULT_MODEL[ns.dataset]
    if model_name not in models.IMAGE_CLASSIFIERS:
        raise SystemExit(f"gpudl train: {model_name!r} is not an image classifier; choose from "
                         f"{sorted(models.IMAGE_CLASSIFIERS)}")
    x, y = _load_dataset(ns.dataset)
    need = models.IMAGE_CLASSIFIERS[model_name]
    if model_name != "mlp" and tuple(x.shape[1:]) != need:  # an MLP flattens any image
        raise SystemExit(
            f"gpudl train: {model_name} expects {need[1]}x{need[2]} images with {need[0]} "
            f"channel(s) but {ns.dataset} has {x.shape[-2]}x{x.shape[-1]} with {x.shape[1]}; "
            "use --model mlp (or --dataset mnist_5k with --model lenet5)"
        )
    (xtr, ytr), (xva, yva), (xte, yte) = data.train_val_test_split(x, y, val=0.1, test=0.2,
                                                                    seed=ns.seed)
    model = models.get_model(model_name)
    opt = {"sgd": lambda: optim.sgd(ns.lr, momentum=0.9), "adam": lambda: optim.adam(ns.lr)}
    if ns.optimizer not in opt:
        raise SystemExit(f"gpudl train: unknown optimizer {ns.optimizer!r}; choose sgd or adam")
    callbacks = []
    resume = None
    if ns.checkpoint_dir:
        os.makedirs(ns.checkpoint_dir, exist_ok=True)
        path = os.path.join(ns.checkpoint_dir, "last.npz")
        callbacks.append(ModelCheckpoint(path, best_only=False))
        if ns.resume and os.path.exists(path):
            resume = path
    print(f"training {model_name} on {ns.dataset} ({len(ytr)} train / {len(yva)} validation / "
          f"{len(yte)} test images) on {gd.get_device()}")
    history = fit(model, (xtr, ytr), loss="cross_entropy", optimizer=opt[ns.optimizer](),
                  epochs=ns.epochs, batch_size=ns.batch_size, validation_data=(xva, yva),
                  metrics=["accuracy"], callbacks=callbacks, key=gd.random.key(ns.seed),
                  resume_from=resume, verbose=ns.verbose)
    test = evaluate(model, history.params, history.state, (xte, yte), metrics=["accuracy"])
    print(f"test accuracy: {test['accuracy']:.4f} on {len(yte)} held-out images")
    return 0


def bench(ns: argparse.Namespace) -> int:
    from gpudl.bench.train_step import bench_model, format_table, plot, save_json

    report = bench_model(ns.model, ns.batch_size, ns.steps, ns.devices.split(","), ns.warmup)
    print(format_table(report))
    if ns.json:
        save_json(report, ns.json)
        print(f"wrote {ns.json}")
    if ns.plot:
        plot(report, ns.plot)
        print(f"wrote {ns.plot}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpudl", description="gpudl command line")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="what gpudl sees: versions, device, GPU, driver, BLAS")
    t = sub.add_parser("train", help="train a model on a shipped dataset")
    t.add_argument("--model", default=None,
                   help="lenet5 | mlp (default: lenet5 for mnist_5k, mlp for digits)")
    t.add_argument("--dataset", default="mnist_5k", choices=DATASETS)
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--optimizer", default="sgd")
    t.add_argument("--device", default=None, help="auto | cpu | cuda")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-dir", default=None)
    t.add_argument("--resume", action="store_true")
    t.add_argument("--verbose", type=int, default=1, help="0: quiet, 1: progress per epoch")
    b = sub.add_parser("bench", help="time training steps on cpu and cuda")
    b.add_argument("--model", default="lenet5", help="lenet5 | mlp")
    b.add_argument("--batch-size", type=int, default=128)
    b.add_argument("--steps", type=int, default=50)
    b.add_argument("--warmup", type=int, default=5)
    b.add_argument("--devices", default="cpu,cuda")
    b.add_argument("--json", default=None)
    b.add_argument("--plot", default=None)
    ns = parser.parse_args(argv)
    if ns.command == "doctor":
        return doctor()
    if ns.command == "train":
        return train(ns)
    return bench(ns)


if __name__ == "__main__":
    sys.exit(main())
