"""gd.save / gd.load: round trips, torch-named keys, mismatches, corruption, atomicity."""

from __future__ import annotations

import os

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn, serialization

FORMATS = ["npz", "safetensors"]


def _tree():
    rng = np.random.default_rng(0)
    return {
        "conv1": {"weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
                  "bias": rng.standard_normal(4)},  # float64
        "layers": [{"w": np.arange(6, dtype=np.int32).reshape(2, 3)},
                   {"w": np.array([1, -2], dtype=np.int64)}],
        "step": np.array(12, dtype=np.int64),  # 0-d stays 0-d
        "mask": np.array([True, False]),
        "nested": {"deeper": {"x": np.full((2, 0), 1.0, np.float32)}},
    }


def _assert_equal_trees(a, b):
    assert gd.tree.tree_structure(a) == gd.tree.tree_structure(b)
    pairs = zip(gd.tree.flatten_with_paths(a), gd.tree.flatten_with_paths(b), strict=True)
    for (ka, la), (kb, lb) in pairs:
        assert ka == kb
        la, lb = gd.to_numpy(la), gd.to_numpy(lb)
        assert la.dtype == lb.dtype and la.shape == lb.shape, ka
        np.testing.assert_array_equal(la, lb)


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_keeps_structure_dtypes_and_shapes(tmp_path, fmt):
    tree = _tree()
    path = tmp_path / f"ckpt.{fmt}"
    gd.save(path, tree)
    back = gd.load(path)
    assert isinstance(back["layers"], list)  # lists come back as lists
    _assert_equal_trees(tree, back)  # key order kept too (safetensors sorts; gpudl restores)
    _assert_equal_trees(tree, gd.load(path, like=tree))
    assert sorted(os.listdir(tmp_path)) == [f"ckpt.{fmt}"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_model_params_round_trip(tmp_path, fmt):
    net = nn.Sequential([nn.Dense(5), nn.BatchNorm1d(), nn.ReLU(), nn.Dense(2)])
    x = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    params, state = net.init(gd.random.key(0), x)
    _, state = net.apply(params, state, x, train=True)
    gd.save(tmp_path / f"p.{fmt}", params)
    gd.save(tmp_path / f"s.{fmt}", state)
    p2 = gd.load(tmp_path / f"p.{fmt}", like=params)
    s2 = gd.load(tmp_path / f"s.{fmt}", like=state)
    np.testing.assert_array_equal(net.apply(p2, s2, x)[0], net.apply(params, state, x)[0])


def test_flat_keys_are_torch_style(tmp_path):
    from safetensors.numpy import load_file

    net = nn.Sequential([nn.Dense(4), nn.ReLU(), nn.Dense(2, bias=False)])
    params, _ = net.init(gd.random.key(0), np.zeros((1, 3), np.float32))
    gd.save(tmp_path / "p.safetensors", params)
    assert sorted(load_file(str(tmp_path / "p.safetensors"))) == [
        "0.bias", "0.weight", "2.weight"]  # torch's nn.Sequential keys
    gd.save(tmp_path / "p.npz", params)
    with np.load(tmp_path / "p.npz") as data:  # readable by plain NumPy, same flat keys
        assert sorted(data.files) == ["0.bias", "0.weight", "2.weight"]
    back = gd.load(tmp_path / "p.npz")  # positional keys stay dict keys, as in torch
    assert sorted(back) == ["0", "2"] and net.apply(back, {}, np.ones((1, 3), np.float32))


def test_torch_named_safetensors_load_and_write_back(tmp_path):
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(2)
    torch_sd = {
        "conv1.weight": rng.standard_normal((6, 1, 5, 5)).astype(np.float32),
        "conv1.bias": rng.standard_normal(6).astype(np.float32),
        "fc.0.weight": rng.standard_normal((10, 4)).astype(np.float32),
        "bn1.num_batches_tracked": np.array(3, dtype=np.int64),
    }
    save_file(torch_sd, str(tmp_path / "torch.safetensors"))
    tree = gd.load(tmp_path / "torch.safetensors")
    np.testing.assert_array_equal(tree["conv1"]["weight"], torch_sd["conv1.weight"])
    np.testing.assert_array_equal(tree["fc"]["0"]["weight"], torch_sd["fc.0.weight"])  # a Sequential key
    assert tree["bn1"]["num_batches_tracked"].shape == ()
    gd.save(tmp_path / "back.safetensors", tree)
    again = load_file(str(tmp_path / "back.safetensors"))
    assert sorted(again) == sorted(torch_sd)
    for k, v in torch_sd.items():
        assert again[k].dtype == v.dtype
        np.testing.assert_array_equal(again[k], v)


def test_torch_named_weights_load_into_a_model(tmp_path):
    from safetensors.numpy import save_file

    net = nn.Sequential([nn.Dense(3, name="fc1"), nn.Tanh(), nn.Dense(2, name="fc2")])
    like, state = net.init(gd.random.key(0), np.zeros((1, 4), np.float32))
    rng = np.random.default_rng(3)
    sd = {"fc1.weight": rng.standard_normal((3, 4)), "fc1.bias": rng.standard_normal(3),
          "fc2.weight": rng.standard_normal((2, 3)), "fc2.bias": rng.standard_normal(2)}
    save_file(sd, str(tmp_path / "w.safetensors"))
    params = gd.load(tmp_path / "w.safetensors", like=like)
    x = rng.standard_normal((5, 4))
    ref = np.tanh(x @ sd["fc1.weight"].T + sd["fc1.bias"]) @ sd["fc2.weight"].T + sd["fc2.bias"]
    np.testing.assert_allclose(net.apply(params, state, x)[0], ref, rtol=1e-12)


@pytest.mark.parametrize("fmt", FORMATS)
def test_load_like_mismatch_names_missing_extra_and_shapes(tmp_path, fmt):
    saved = {"a": {"weight": np.zeros((2, 3)), "bias": np.zeros(2)}, "old": np.zeros(1)}
    gd.save(tmp_path / f"m.{fmt}", saved)
    like = {"a": {"weight": np.zeros((3, 3)), "bias": np.zeros(2)}, "new": np.zeros(1)}
    with pytest.raises(gd.TreeMismatchError) as err:
        gd.load(tmp_path / f"m.{fmt}", like=like)
    msg = str(err.value)
    assert "missing keys ['new']" in msg and "extra keys ['old']" in msg
    assert "a.weight: file (2, 3) vs model (3, 3)" in msg


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_file_raises_checkpoint_error(tmp_path, fmt, damage):
    path = tmp_path / f"c.{fmt}"
    gd.save(path, _tree())
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    else:
        path.write_bytes(b"")
    with pytest.raises(gd.CheckpointError, match="truncated or corrupt"):
        gd.load(path)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(gd.CheckpointError, match="no file"):
        gd.load(tmp_path / "nope.npz")
    with pytest.raises(gd.CheckpointError, match=r"\.npz or \.safetensors"):
        gd.save(tmp_path / "p.pkl", {"a": np.zeros(1)})


@pytest.mark.parametrize("fmt, writer", [("npz", "_write_npz"),
                                         ("safetensors", "_write_safetensors")])
def test_interrupted_save_keeps_previous_file(tmp_path, monkeypatch, fmt, writer):
    path = tmp_path / f"ckpt.{fmt}"
    old = {"w": np.arange(4.0)}
    gd.save(path, old)
    real = getattr(serialization, writer)

    def crash_midway(f, flat, *metadata):
        import io

        buf = io.BytesIO()
        real(buf, flat, *metadata)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])  # half the new file is out...
        raise KeyboardInterrupt("simulated crash")  # ...when the process is interrupted

    monkeypatch.setattr(serialization, writer, crash_midway)
    with pytest.raises(KeyboardInterrupt):
        gd.save(path, {"w": np.arange(1000.0), "extra": np.ones(5)})
    monkeypatch.undo()
    _assert_equal_trees(gd.load(path), old)
    assert os.listdir(tmp_path) == [f"ckpt.{fmt}"]  # no temp file left behind


def test_npz_keys_that_clash_with_numpy_keywords(tmp_path):
    # np.savez(f, **flat) would fail on these names; they are ordinary parameter names here
    tree = {"file": np.ones(2), "allow_pickle": np.zeros(3, np.int32)}
    gd.save(tmp_path / "k.npz", tree)
    _assert_equal_trees(gd.load(tmp_path / "k.npz", like=tree), tree)


def test_bad_trees_are_refused(tmp_path):
    with pytest.raises(gd.CheckpointError, match="bare array"):
        gd.save(tmp_path / "a.npz", np.zeros(3))
    with pytest.raises(gd.CheckpointError, match="same key 'a.b'"):
        gd.save(tmp_path / "a.npz", {"a.b": np.zeros(1), "a": {"b": np.ones(1)}})
    with pytest.raises(gd.CheckpointError, match="dtype"):
        gd.save(tmp_path / "a.npz", {"name": np.array(["x"])})
    assert os.listdir(tmp_path) == []


def test_saved_file_is_not_private_to_the_owner(tmp_path):
    gd.save(tmp_path / "p.npz", {"a": np.zeros(1)})
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(tmp_path / "p.npz").st_mode & 0o777 == 0o666 & ~mask


def test_every_flipped_bit_of_a_safetensors_file_is_caught(tmp_path):
    """The checksum in the metadata covers the tensors and the metadata: flipping the low
    bit of any byte (header, metadata, checksum, data) makes the load fail by name."""
    path = tmp_path / "w.safetensors"
    gd.save(path, {"a": {"w": np.arange(3, dtype=np.float32)}, "b": np.ones(2)})
    data = path.read_bytes()
    missed = []
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 1
        path.write_bytes(bytes(damaged))
        try:
            gd.load(path)
        except gd.CheckpointError as err:
            assert "truncated or corrupt" in str(err)
        else:
            missed.append(i)
    assert missed == []
    path.write_bytes(data)
    raw = bytearray(data)
    raw[-3] ^= 0x40  # one byte of tensor data: still a well-formed file, other values
    path.write_bytes(bytes(raw))
    with pytest.raises(gd.CheckpointError, match="checksum mismatch"):
        gd.load(path)


def test_safetensors_written_elsewhere_load_without_a_checksum(tmp_path):
    from safetensors.numpy import save_file

    save_file({"w": np.ones(3, np.float32)}, str(tmp_path / "t.safetensors"),
              metadata={"format": "pt"})
    assert gd.load(tmp_path / "t.safetensors")["w"].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_full_disk_names_the_path_and_leaves_no_temp_file(tmp_path, monkeypatch, fmt):
    import errno

    path = tmp_path / f"p.{fmt}"
    gd.save(path, {"w": np.zeros(2)})
    before = path.read_bytes()
    real_fsync = os.fsync

    def full(fd):  # the data was written to the temp file; the disk fills up on flush
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(serialization.os, "fsync", full)
    with pytest.raises(gd.CheckpointError) as info:
        gd.save(path, {"w": np.ones(1000)})
    monkeypatch.setattr(serialization.os, "fsync", real_fsync)
    err = info.value
    assert err.errno == errno.ENOSPC and err.filename == str(path)
    text = str(err)  # the message itself (tmp_path's name holds "full" too)
    assert f"could not write {path}: No space left on device; the disk (or quota) is full" in text
    assert "the previous file at that path, if any, is unchanged" in text and "None" not in text
    assert isinstance(err, OSError) and isinstance(err.__cause__, OSError)
    assert os.listdir(tmp_path) == [f"p.{fmt}"] and path.read_bytes() == before


def test_a_failed_save_removes_its_temp_file(tmp_path, monkeypatch):
    def broken(f, flat, *metadata):
        f.write(b"partial")
        raise RuntimeError("serializer bug")

    monkeypatch.setattr(serialization, "_write_npz", broken)
    with pytest.raises(RuntimeError, match="serializer bug"):
        gd.save(tmp_path / "p.npz", {"w": np.zeros(2)})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_load_returns_the_parts_of_a_training_checkpoint(tmp_path, fmt):
    from gpudl import optim
    from gpudl.train import save_checkpoint

    net = nn.Sequential([nn.Dense(3), nn.BatchNorm1d(), nn.Dense(2)])
    x = np.ones((4, 2), np.float32)
    params, state = net.init(gd.random.key(0), x)
    opt_state = optim.adam(1e-3).init(params)
    path = tmp_path / f"ck.{fmt}"
    save_checkpoint(path, params=params, state=state, opt_state=opt_state, epoch=4, step=40,
                    key=gd.random.key(1), config={"epochs": 9},
                    history={"history": {"loss": [1.0, 0.5]}, "epoch": [0, 1],
                             "epoch_times": [0.1, 0.1]})
    parts = gd.load(path)  # no template: the stored paths rebuild the trees
    assert sorted(parts) == ["config", "epoch", "history", "key", "opt_state", "params",
                             "state", "step"]
    assert (parts["epoch"], parts["step"], parts["config"]) == (4, 40, {"epochs": 9})
    assert parts["history"]["history"] == {"loss": [1.0, 0.5]}
    _assert_equal_trees(parts["params"], params)
    _assert_equal_trees(parts["state"], state)
    flat = dict(gd.tree.flatten_with_paths(opt_state))
    assert dict(gd.tree.flatten_with_paths(parts["opt_state"])).keys() == flat.keys()
    _assert_equal_trees(gd.load(path, like=params), params)  # like=: the params alone
    if fmt == "safetensors":  # the suffix decides the format
        from safetensors.numpy import load_file

        assert "params.0" in load_file(str(path))
    else:
        assert path.read_bytes()[:2] == b"PK"
