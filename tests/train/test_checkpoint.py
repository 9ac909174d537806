"""Checkpoints: contents, atomic writes, corrupt files, mismatched models, exact resume."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
from train_helpers import MomentumSGD, MomentumState, _mlp, cross_entropy

import gpudl as gd
from gpudl.errors import CheckpointError, TreeMismatchError
from gpudl.train import ModelCheckpoint, fit, load_checkpoint, save_checkpoint


def _leaves(tree):
    return gd.tree.tree_leaves(tree)


def _trees(hidden=4):
    params = {"fc1": {"weight": np.arange(hidden * 2, dtype=np.float32).reshape(hidden, 2),
                      "bias": np.ones(hidden, np.float32)},
              "fc2": {"weight": np.full((3, hidden), 0.5, np.float32)}}
    state = {"bn": {"running_mean": np.array([1.5, -2.0], np.float64)}}
    opt_state = MomentumState(7, {k: {n: v * 2 for n, v in d.items()} for k, d in params.items()})
    return params, state, opt_state


def _zero(tree):
    return gd.tree.tree_map(lambda a: np.zeros_like(a) if hasattr(a, "shape") else 0, tree)


def test_checkpoint_holds_everything_and_round_trips(tmp_path):
    params, state, opt_state = _trees()
    key = gd.random.key(42)
    path = tmp_path / "ck.npz"
    save_checkpoint(path, params=params, state=state, opt_state=opt_state, epoch=3, step=120,
                    key=key, config={"lr": 0.1, "model": "mlp"})
    got = load_checkpoint(path, params_like=_zero(params), state_like=_zero(state),
                          opt_state_like=_zero(opt_state))
    assert got["epoch"] == 3 and got["step"] == 120
    assert got["config"] == {"lr": 0.1, "model": "mlp"}
    assert np.array_equal(got["key"], gd.to_numpy(key))
    assert isinstance(got["opt_state"], MomentumState) and got["opt_state"].count == 7
    assert type(got["opt_state"].count) is int
    for a, b in zip(_leaves((params, state, opt_state)), _leaves((got["params"], got["state"],
                                                                  got["opt_state"]))):
        assert np.array_equal(a, b) and np.asarray(a).dtype == np.asarray(b).dtype
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]  # no temp files left


def test_an_interrupted_save_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    params, state, opt_state = _trees()
    path = tmp_path / "ck.npz"
    save_checkpoint(path, params=params, opt_state=opt_state, epoch=1, step=10)
    before = path.read_bytes()

    def write_then_crash(f, flat):
        f.write(b"PK\x03\x04 half a zip file")  # some bytes reach the (temp) file...
        raise KeyboardInterrupt("killed mid-save")  # ...then the process is interrupted

    from gpudl import serialization

    monkeypatch.setattr(serialization, "_write_npz", write_then_crash)
    bigger = gd.tree.tree_map(lambda a: a + 1, params)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, params=bigger, opt_state=opt_state, epoch=2, step=20)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]  # the temp file was removed
    got = load_checkpoint(path, params_like=params, opt_state_like=opt_state)
    assert got["epoch"] == 1
    for a, b in zip(_leaves(got["params"]), _leaves(params)):
        assert np.array_equal(a, b)


def test_truncated_corrupt_and_missing_checkpoints_raise_checkpoint_error(tmp_path):
    params, _, _ = _trees()
    good = tmp_path / "good.npz"
    save_checkpoint(good, params=params, epoch=0)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a checkpoint at all" * 10)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    flipped = tmp_path / "flipped.npz"  # a valid zip whose member data is damaged
    raw = bytearray(data)
    with zipfile.ZipFile(good) as z:
        info = z.getinfo("params.0.npy")
    start = info.header_offset + 30 + len(info.filename) + 60
    raw[start:start + 16] = b"\xff" * 16
    flipped.write_bytes(bytes(raw))
    for bad in (truncated, garbage, empty, flipped):
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load_checkpoint(bad, params_like=params)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.npz", params_like=params)


def test_a_checkpoint_of_another_model_raises_tree_mismatch(tmp_path):
    params, _, _ = _trees(hidden=4)
    path = tmp_path / "ck.npz"
    save_checkpoint(path, params=params)
    wider, _, _ = _trees(hidden=5)
    with pytest.raises(TreeMismatchError, match="shape"):
        load_checkpoint(path, params_like=wider)
    extra = {**params, "fc3": {"weight": np.zeros((1, 3), np.float32)}}
    with pytest.raises(TreeMismatchError, match="fc3.weight"):
        load_checkpoint(path, params_like=extra)
    renamed = {"a": params["fc1"], "fc2": params["fc2"]}  # same shapes, other names
    with pytest.raises(TreeMismatchError, match="a.weight"):
        load_checkpoint(path, params_like=renamed)


def _resume_kw(data):
    return dict(loss=cross_entropy, optimizer=MomentumSGD(0.05, momentum=0.9), batch_size=8,
                shuffle=True, verbose=0, train_data=data)


def _fit(model, epochs, **kw):
    data = kw.pop("train_data")
    return fit(model, data, epochs=epochs, **kw)


def test_resume_reproduces_an_uninterrupted_run_bitwise(tmp_path, blob_data):
    """2 epochs == 1 epoch + save + resume + 1 epoch, with shuffling, dropout and momentum."""
    train, _ = blob_data
    model = _mlp()(dropout=0.3)
    key = gd.random.key(11)
    straight = _fit(model, 2, key=key, **_resume_kw(train))

    path = tmp_path / "last.npz"
    first = _fit(model, 1, key=key, callbacks=[ModelCheckpoint(str(path), best_only=False)],
                 **_resume_kw(train))
    saved = load_checkpoint(path, params_like=first.params, opt_state_like=first.opt_state)
    assert saved["epoch"] == 0 and saved["step"] == 8 and saved["opt_state"].count == 8
    assert np.array_equal(saved["key"], gd.to_numpy(key))
    # key=None on purpose: the checkpoint's key must drive shuffling and dropout.
    resumed = _fit(model, 2, resume_from=str(path), **_resume_kw(train))
    assert resumed.epochs_run == 2 and resumed.epoch == [0, 1]  # the History continues
    assert resumed.history == straight.history and resumed.step == straight.step == 16
    for a, b in zip(_leaves(resumed.params), _leaves(straight.params)):
        assert np.array_equal(a, b)
    for a, b in zip(_leaves(resumed.opt_state), _leaves(straight.opt_state)):
        assert np.array_equal(a, b)
    assert resumed["loss"][-1] == straight["loss"][-1]
    # Sanity: the keys matter (dropout and shuffling differ under another key).
    other = _fit(model, 2, key=gd.random.key(12), **_resume_kw(train))
    assert not all(np.array_equal(a, b) for a, b in zip(_leaves(other.params),
                                                        _leaves(straight.params)))


def test_resume_restores_the_lr_scale(tmp_path, blob_data):
    train, _ = blob_data
    from gpudl.train import Callback

    class Halve(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            trainer.lr_scale = 0.5

    path = tmp_path / "ck.npz"
    model = _mlp()()
    _fit(model, 1, key=gd.random.key(0),
         callbacks=[Halve(), ModelCheckpoint(str(path), best_only=False)], **_resume_kw(train))
    grab = {}

    class Grab(Callback):
        def on_train_begin(self, trainer):
            grab["scale"] = trainer.lr_scale

    _fit(model, 2, resume_from=str(path), callbacks=[Grab()], **_resume_kw(train))
    assert grab["scale"] == 0.5


def test_resume_with_the_real_adam_optimizer_is_bitwise(tmp_path, blob_data):
    """Needs gpudl.optim (adam's state holds a step count and moment trees)."""
    from gpudl import optim

    train, _ = blob_data
    model = _mlp()(dropout=0.2)
    kw = dict(loss="cross_entropy", batch_size=16, verbose=0)
    straight = fit(model, train, optimizer=optim.adam(1e-2), epochs=2, key=gd.random.key(4), **kw)
    path = tmp_path / "ck.npz"
    fit(model, train, optimizer=optim.adam(1e-2), epochs=1, key=gd.random.key(4),
        callbacks=[ModelCheckpoint(str(path), best_only=False)], **kw)
    resumed = fit(model, train, optimizer=optim.adam(1e-2), epochs=2, resume_from=str(path), **kw)
    for a, b in zip(_leaves(resumed.params), _leaves(straight.params)):
        assert np.array_equal(a, b)
    for a, b in zip(_leaves(resumed.opt_state), _leaves(straight.opt_state)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(TreeMismatchError):  # an sgd-with-momentum state is another tree
        fit(model, train, optimizer=optim.sgd(0.1), epochs=2, resume_from=str(path), **kw)


def test_model_checkpoint_suffix_picks_the_format_and_step_fills_the_path(tmp_path, blob_data):
    train, _ = blob_data
    ck = ModelCheckpoint(str(tmp_path / "ck-{epoch}-{step}.safetensors"), monitor="loss")
    h = _fit(_mlp()(), 2, key=gd.random.key(0), callbacks=[ck], **_resume_kw(train))
    assert [p.rsplit("/", 1)[1] for p in ck.saved] == ["ck-0-8.safetensors", "ck-1-16.safetensors"]
    from safetensors.numpy import load_file

    assert "params.0" in load_file(ck.saved[-1])  # safetensors bytes, not npz
    got = load_checkpoint(ck.saved[-1], params_like=h.params, opt_state_like=h.opt_state)
    assert got["epoch"] == 1 and got["history"]["epoch"] == [0, 1]
    for a, b in zip(_leaves(got["params"]), _leaves(h.params)):
        assert np.array_equal(a, b)
    resumed = _fit(_mlp()(), 3, resume_from=ck.saved[-1], **_resume_kw(train))
    assert resumed.epoch == [0, 1, 2]


def test_checkpoints_of_the_first_layout_still_load(tmp_path):
    """Files written before the History and callbacks were saved: arrays only."""
    params, state, opt_state = _trees()
    arrays = {}
    for name, tree in (("params", params), ("state", state), ("opt_state", opt_state)):
        pairs = gd.tree.flatten_with_paths(tree)
        arrays[f"{name}.count"] = np.asarray(len(pairs))
        arrays[f"{name}.paths"] = np.frombuffer(str([p for p, _ in pairs]).replace("'", '"')
                                                .encode(), np.uint8)
        for i, (_, leaf) in enumerate(pairs):
            arrays[f"{name}.{i}"] = np.asarray(leaf)
    arrays.update(epoch=np.asarray(2), step=np.asarray(30), key=gd.random.key(3),
                  config=np.frombuffer(b'{"lr_scale": 0.5}', np.uint8))
    path = tmp_path / "old.npz"
    np.savez(path, **arrays)
    got = load_checkpoint(path, params_like=params, state_like=state, opt_state_like=opt_state)
    assert (got["epoch"], got["step"], got["config"]) == (2, 30, {"lr_scale": 0.5})
    assert isinstance(got["opt_state"], MomentumState) and got["history"] is None
    parts = gd.load(path)  # gd.load recognises it too
    assert parts["epoch"] == 2 and np.array_equal(parts["params"]["fc1"]["bias"],
                                                  params["fc1"]["bias"])
