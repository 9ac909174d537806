"""The fused optimizer updates (gpudl/optim/fused.py, _optim_kernels.py, flat.py and
kernels/optim_update.cu): the same bits as the composable chain, torch's numbers, the
chain whenever the fused body does not apply, the flat in-place update, and the kernel
against its NumPy twin."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gpudl as gd
from gpudl import optim
from gpudl.errors import OptimizerStateError, TreeMismatchError
from gpudl.optim import _optim_kernels as K
from gpudl.optim import fused as fused_mod
from gpudl.optim.flat import FlatTrees
from gpudl.optim.fused import fused_rule
from gpudl.tree import tree_leaves, tree_map

CONFIGS = [
    ("sgd", dict(lr=0.1)),
    ("sgd", dict(lr=0.1, weight_decay=0.05)),
    ("sgd", dict(lr=0.1, momentum=0.9)),
    ("sgd", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.05)),
    ("sgd", dict(lr=0.1, momentum=0.5, dampening=0.3)),
    ("adam", dict(lr=0.05)),
    ("adam", dict(lr=0.05, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.1)),
    ("adam", dict(lr=0.05, amsgrad=True)),
    ("adamw", dict(lr=0.05)),
    ("adamw", dict(lr=0.05, weight_decay=0.3, amsgrad=True)),
    ("adam", dict(lr=optim.cosine_annealing(0.05, 4))),
]
IDS = [f"{n}-" + ("-".join(f"{k}={v}" for k, v in kw.items() if k != "lr")
                   or ("schedule" if callable(kw["lr"]) else "defaults")) for n, kw in CONFIGS]


def chain_of(opt):
    """The composable chain the alias built (the fused update's fallback)."""
    return optim.GradientTransformation(opt.init, opt.update.fallback)


def problem(dtype, rng, xp=np):
    """Params with a non-contiguous leaf, a 0-d leaf and an empty one; 3 gradient trees."""
    def tree(shape_b=(4, 3)):
        return {"a": rng.standard_normal(37), "b": {"w": rng.standard_normal(shape_b),
                                                    "s": np.asarray(rng.standard_normal())},
                "e": np.zeros((0, 2))}
    p = tree((3, 4))
    p["b"]["w"] = p["b"]["w"].T  # a transposed (non-contiguous) parameter
    def to(a):
        return xp.asarray(np.asarray(a, dtype))

    return tree_map(to, p), [tree_map(to, tree()) for _ in range(3)]


def run(opt, params, grads):
    state = opt.init(params)
    for g in grads:
        updates, state = opt.update(g, state, params)
        params = optim.apply_updates(params, updates)
    return params, state


def host(tree):
    return tree_map(lambda x: gd.to_numpy(x) if hasattr(x, "dtype") else x, tree)


def same_bits(a, b) -> bool:
    la, lb = tree_leaves(a), tree_leaves(b)
    return len(la) == len(lb) and all(
        type(x) is type(y) if not hasattr(x, "dtype") else
        (x.dtype == y.dtype and x.shape == y.shape
         and np.array_equal(gd.to_numpy(x), gd.to_numpy(y), equal_nan=True))
        for x, y in zip(la, lb))


@pytest.fixture
def took_fused(monkeypatch):
    """Counts the updates the fused body computed (not handed to the chain)."""
    calls = []
    real = fused_mod.regular_leaves

    def spy(*args):
        plan = real(*args)
        calls.append(plan is not None)
        return plan

    monkeypatch.setattr(fused_mod, "regular_leaves", spy)
    return calls


# ----------------------------------------------------------------------------- which path
def test_the_aliases_are_fused_and_compositions_are_not():
    for name, kw in CONFIGS:
        assert fused_rule(getattr(optim, name)(**kw)).op == name
    assert fused_rule(optim.chain(optim.clip(1.0), optim.adam())) is None
    assert fused_rule(optim.adamw(decay_mask=optim.weight_decay_mask)) is None
    assert fused_rule(optim.freeze({"w": True}, optim.adam())) is None
    assert fused_rule(optim.rmsprop()) is None and fused_rule(optim.adagrad()) is None
    # a mask with no decay to mask changes nothing: still fused
    assert fused_rule(optim.adam(decay_mask=optim.weight_decay_mask)) is not None


# LEAF_BY_LEAF_FROM: None keeps the default (every leaf here is small: one flat call); 0 is
# the CPU's path for large leaves, here for every size; 10 mixes them (a and w on their own,
# the 0-d and the empty leaf in one flat call between them).
@pytest.mark.parametrize("own_from", [None, 0, 10], ids=["multi-tensor", "leaf-by-leaf", "mixed"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_fused_update_gives_the_chains_bits(name, kw, dtype, own_from, took_fused, monkeypatch):
    if own_from is not None:
        monkeypatch.setattr(fused_mod, "LEAF_BY_LEAF_FROM", own_from)
    params, grads = problem(dtype, np.random.default_rng(0))
    opt = getattr(optim, name)(**kw)
    fused_p, fused_s = run(opt, params, grads)
    chain_p, chain_s = run(chain_of(opt), params, grads)
    assert took_fused == [True] * len(grads)
    assert same_bits(fused_p, chain_p) and same_bits(fused_s, chain_s)
    assert all(leaf.dtype == dtype for leaf in tree_leaves(fused_p))


# Steps where a bias correction has rounded to 1 in the dtype (1 - 0.9^t from 165 in float32,
# 356 in float64; sqrt(1 - 0.999^t) from 16,628 and 37,412): the twin leaves that division
# out; the chain still divides. Both sides of each boundary.
@pytest.mark.parametrize("dtype,counts", [(np.float32, (163, 164, 16626, 16627)),
                                          (np.float64, (354, 355, 37410, 37411))])
@pytest.mark.parametrize("name,kw", [("adam", {"lr": 1e-2}),
                                     ("adamw", {"lr": 1e-2, "amsgrad": True})])
def test_late_steps_whose_bias_corrections_are_one_give_the_chains_bits(name, kw, dtype,
                                                                       counts, took_fused):
    from gpudl.optim.transforms import ScaleByAdamState

    params, grads = problem(dtype, np.random.default_rng(3))
    opt = getattr(optim, name)(**kw)
    for count in counts:
        def late(state, count=count):
            return tuple(s._replace(count=count) if type(s) is ScaleByAdamState else s
                         for s in state)

        took_fused.clear()
        results = []
        for o in (opt, chain_of(opt)):
            state = late(o.init(params))
            p = params
            for g in grads[:2]:  # steps count + 1 and count + 2
                updates, state = o.update(g, state, p)
                p = optim.apply_updates(p, updates)
            results.append((p, state))
        assert took_fused == [True, True]
        assert same_bits(results[0][0], results[1][0]), count
        assert same_bits(results[0][1], results[1][1]), count


@pytest.mark.parametrize("name,kw", [c for c in CONFIGS if c[0] != "sgd" or "momentum" in c[1]],
                         ids=[i for c, i in zip(CONFIGS, IDS) if c[0] != "sgd" or
                              "momentum" in c[1]])
def test_fused_float32_against_torch(name, kw):
    torch = pytest.importorskip("torch")
    if callable(kw["lr"]):
        pytest.skip("torch's schedulers step differently; the chain test covers schedules")
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal((5, 7)).astype(np.float32)
    grads = [rng.standard_normal((5, 7)).astype(np.float32) for _ in range(4)]
    tp = torch.tensor(p0, requires_grad=True)
    topt = getattr(torch.optim, {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}[name])(
        [tp], foreach=False, **kw)
    opt = getattr(optim, name)(**kw)
    params = {"w": p0}
    state = opt.init(params)
    for g in grads:
        tp.grad = torch.tensor(g)
        topt.step()
        updates, state = opt.update({"w": g}, state, params)
        params = optim.apply_updates(params, updates)
    np.testing.assert_allclose(params["w"], tp.detach().numpy(), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("case", ["float64-grads", "key-order", "masked-leaf", "list-grads"])
def test_irregular_trees_take_the_chain_with_the_same_result(case, took_fused):
    rng = np.random.default_rng(1)
    params = {"w": rng.standard_normal((2, 3)).astype(np.float32),
              "b": rng.standard_normal(3).astype(np.float32)}
    grads = tree_map(lambda p: (p * 0.5 + 0.1).astype(p.dtype), params)
    if case == "float64-grads":
        grads = tree_map(lambda g: g.astype(np.float64), grads)
    elif case == "key-order":
        grads = {"b": grads["b"], "w": grads["w"]}
    elif case == "masked-leaf":
        params["b"], grads["b"] = None, None
    opt = optim.adamw(0.1, weight_decay=0.1)
    if case == "list-grads":  # a Python list where an array belongs: the chain's error
        grads["b"] = np.asarray(grads["b"]).tolist()
        with pytest.raises(TreeMismatchError) as chain_error:
            chain_of(opt).update(grads, opt.init(params), params)
        with pytest.raises(TreeMismatchError, match=re.escape(str(chain_error.value))):
            opt.update(grads, opt.init(params), params)
        return
    got = opt.update(grads, opt.init(params), params)
    want = chain_of(opt).update(grads, chain_of(opt).init(params), params)
    # None (masked-out) leaves are regular (no state, no update, as in the chain), and trees
    # are matched by key as the chain matches them: another key order is regular too.
    assert took_fused == [case in ("masked-leaf", "key-order")] and same_bits(got, want)


def test_traced_grads_take_the_differentiable_chain():
    # Differentiating through optimizer steps (meta-learning) needs the chain's ops.
    opt = optim.sgd(0.1, momentum=0.9)
    state0 = opt.init({"w": np.zeros(2)})

    def after_two_steps(w):
        params, state = {"w": w}, state0
        for _ in range(2):
            updates, state = opt.update({"w": params["w"] * 2.0}, state, params)
            params = optim.apply_updates(params, updates)
        return params["w"].sum()

    # gradient of ||w||^2 is 2w: w1 = 0.8 w, buf1 = 2w; buf2 = 0.9 buf1 + 1.6 w = 3.4 w;
    # w2 = w1 - 0.1 buf2 = 0.46 w
    g = gd.grad(after_two_steps)(np.array([1.0, -2.0]))
    np.testing.assert_allclose(g, [0.46, 0.46], rtol=1e-12)


def test_errors_are_the_chains():
    params = {"w": np.ones((3, 4))}
    with pytest.raises(OptimizerStateError, match="adam.update: .*ScaleByAdamState"):
        optim.adam().update(params, optim.sgd(0.1, momentum=0.9).init(params), params)
    with pytest.raises(TreeMismatchError, match="adam"):
        optim.adam().update({"v": np.ones(2)}, optim.adam().init(params), params)
    with pytest.raises(OptimizerStateError, match=r"'w' has shape \(1, 4\)"):
        optim.adam().update(params, optim.adam().init({"w": np.ones((1, 4))}), params)
    with pytest.raises(ValueError, match="needs the current params"):
        optim.adamw(weight_decay=0.1).update(params, optim.adamw().init(params))
    with pytest.raises(ValueError, match="sgd: the lr schedule gave -1.0 at step 0"):
        opt = optim.sgd(lambda step: -1.0, momentum=0.9)
        opt.update(params, opt.init(params), params)


# ----------------------------------------------------------------------------- the twin
def test_twin_chunks_and_in_place_give_the_same_bits(monkeypatch):
    rng = np.random.default_rng(2)
    n = 1001
    g, p, m, v, vmax = (rng.standard_normal(n).astype(np.float32) for _ in range(5))
    v, vmax = np.abs(v), np.abs(vmax)
    k = K.adam_scalars(0.9, 0.999, 1e-8, t=3, lr=0.01, weight_decay=0.1, lr_scale=0.5,
                       flags=K.AMSGRAD | K.L2)
    outs = [np.empty(n, np.float32) for _ in range(4)]
    K.adam_twin(g, p, m, v, vmax, outs[0], *outs[1:], k)  # the updates, fresh outputs
    monkeypatch.setattr(K, "CHUNK", 64)  # 16 chunks, the last one short
    kw = k._replace(flags=k.flags | K.WRITE_PARAMS)
    ip, im, iv, ivm = p.copy(), m.copy(), v.copy(), vmax.copy()
    K.adam_twin(g, ip, im, iv, ivm, ip, im, iv, ivm, kw)  # in place, chunked
    assert np.array_equal(ip, p + outs[0]) and np.array_equal(im, outs[1])
    assert np.array_equal(iv, outs[2]) and np.array_equal(ivm, outs[3])
    k2 = K.sgd_scalars(lr=0.1, weight_decay=0.01, momentum=0.9, dampening=0.2,
                       flags=K.MOMENTUM | K.L2)
    u, b = np.empty(n, np.float32), np.empty(n, np.float32)
    K.sgd_twin(g, p, m, u, b, k2)
    ip, ib = p.copy(), m.copy()
    K.sgd_twin(g, ip, ib, ip, ib, k2._replace(flags=k2.flags | K.WRITE_PARAMS))
    assert np.array_equal(ip, p + u) and np.array_equal(ib, b)


def test_twin_against_a_naive_float64_loop():
    rng = np.random.default_rng(4)
    g, p, m = rng.standard_normal(5), rng.standard_normal(5), rng.standard_normal(5)
    v = np.abs(rng.standard_normal(5))
    out, mo, vo = np.empty(5), np.empty(5), np.empty(5)
    k = K.adam_scalars(0.8, 0.95, 1e-3, t=2, lr=0.1, weight_decay=0.2, flags=K.DECOUPLED)
    K.adam_twin(g, p, m, v, None, out, mo, vo, None, k)
    for i in range(5):
        mi = 0.8 * m[i] + 0.2 * g[i]
        vi = 0.95 * v[i] + 0.05 * g[i] ** 2
        direction = mi / (1 - 0.8 ** 2) / (np.sqrt(vi / (1 - 0.95 ** 2)) + 1e-3)
        assert out[i] == pytest.approx(-0.1 * (direction + 0.2 * p[i]), rel=1e-12)
        assert (mo[i], vo[i]) == pytest.approx((mi, vi), rel=1e-14)


# ----------------------------------------------------------------------------- flat buffers
@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_flat_in_place_step_gives_the_pure_steps_bits(name, kw):
    params, grads = problem(np.float32, np.random.default_rng(5))
    opt = getattr(optim, name)(**kw)
    given, before = params, tree_map(np.copy, params)
    flat = FlatTrees.adopt(opt, params, opt.init(params))
    buffer = flat.flat_p
    state = opt.init(params)
    for i, g in enumerate(grads):
        assert flat.load_grads(g)
        scale = 0.5 if i == 1 else 1.0  # a reduce-on-plateau factor on one step
        flat.apply(scale)
        updates, state = opt.update(g, state, params)
        params = optim.apply_updates(params, optim.scale_updates(updates, scale))
    assert flat.flat_p is buffer  # in place: the same buffer all along
    assert same_bits(flat.params, params) and same_bits(flat.opt_state, state)
    assert same_bits(given, before)  # adopt copied: the given trees are untouched


def test_flat_trees_refuse_what_they_cannot_hold():
    p32 = {"w": np.ones((2, 2), np.float32), "b": np.ones(2, np.float32)}
    mixed = {"w": np.ones((2, 2), np.float32), "b": np.ones(2)}
    assert FlatTrees.adopt(optim.adam(), p32, optim.adam().init(p32)) is not None
    assert FlatTrees.adopt(optim.adam(), mixed, optim.adam().init(mixed)) is None
    assert FlatTrees.adopt(optim.rmsprop(), p32, optim.rmsprop().init(p32)) is None
    assert FlatTrees.adopt(optim.adam(), p32, optim.sgd(0.1).init(p32)) is None
    assert FlatTrees.adopt(optim.adam(), {}, optim.adam().init({})) is None
    flat = FlatTrees.adopt(optim.adam(), p32, optim.adam().init(p32))
    assert not flat.load_grads({"w": np.ones((2, 2)), "b": np.ones(2)})  # float64 grads
    assert not flat.load_grads({"w": np.ones((2, 2), np.float32)})  # a missing leaf
    # matched by key, as the chain matches trees: another key order lands where it belongs
    assert flat.load_grads({"b": np.full(2, 2.0, np.float32), "w": np.ones((2, 2), np.float32)})
    assert flat.flat_g.tolist() == [1.0] * 4 + [2.0] * 2


def test_unshared_sees_kept_leaves_trees_and_views():
    params = {"l1": {"w": np.ones((2, 3), np.float32)}, "l2": [np.ones(3, np.float32)]}
    flat = FlatTrees.adopt(optim.sgd(0.1), params, optim.sgd(0.1).init(params))
    assert flat.unshared()
    kept = []
    for take in (lambda t: t["l1"]["w"], lambda t: t["l1"], lambda t: t, lambda t: t["l2"],
                 lambda t: t["l1"]["w"].T, lambda t: t["l2"][0][1:]):
        tree = flat.fresh_params()
        kept.append(take(tree))
        del tree
        assert not flat.unshared()
        kept.clear()
        assert flat.unshared()
    assert flat.copy().unshared()


# ----------------------------------------------------------------------------- GPU vs twin
GPU_FLAGS = {
    "adam": [0, K.L2, K.DECOUPLED | K.AMSGRAD | K.SCALE],
    "sgd": [0, K.L2 | K.MOMENTUM | K.FIRST, K.MOMENTUM | K.NESTEROV | K.SCALE,
            K.MOMENTUM | K.DAMP],
}


def _scalars(kind, flags):
    if kind == "adam":
        return K.adam_scalars(0.9, 0.99, 1e-6, t=2, lr=0.1, weight_decay=0.05, lr_scale=0.5,
                              flags=flags)
    return K.sgd_scalars(lr=0.1, weight_decay=0.05, momentum=0.9,
                         dampening=0.25 if flags & K.DAMP else 0.0, lr_scale=0.5, flags=flags)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["adam", "sgd"])
@pytest.mark.parametrize("n", [0, 1, 300])
def test_kernel_matches_twin_bit_for_bit(kind, dtype, n):
    cupy = gd.backend.xp_for("cuda")
    rng = np.random.default_rng(n)
    for flags in GPU_FLAGS[kind]:
        for write in (0, K.WRITE_PARAMS):
            k = _scalars(kind, flags | write)
            host = [rng.standard_normal(n).astype(dtype) for _ in range(5)]
            host[3], host[4] = np.abs(host[3]), np.abs(host[4])  # v, vmax >= 0
            dev = [cupy.asarray(a) for a in host]
            if kind == "adam":
                h_out = [np.empty(n, dtype) for _ in range(4)]
                K.adam_twin(host[0], host[1], host[2], host[3], host[4], *h_out, k)
                if write:  # in place on the device, as the flat update runs
                    K.adam_raw(dev[0], dev[1], dev[2], dev[3], dev[4], dev[1], dev[2], dev[3],
                               dev[4], k)
                    d_out = [dev[1], dev[2], dev[3], dev[4]]
                else:
                    d_out = [cupy.empty(n, dtype) for _ in range(4)]
                    K.adam_raw(*dev, *d_out, k)
                checked = h_out if flags & K.AMSGRAD else h_out[:3]
            else:
                h_out = [np.empty(n, dtype) for _ in range(2)]
                K.sgd_twin(host[0], host[1], host[2], *h_out, k)
                if write:
                    K.sgd_raw(dev[0], dev[1], dev[2], dev[1], dev[2], k)
                    d_out = [dev[1], dev[2]]
                else:
                    d_out = [cupy.empty(n, dtype) for _ in range(2)]
                    K.sgd_raw(dev[0], dev[1], dev[2], *d_out, k)
                checked = h_out if flags & K.MOMENTUM else h_out[:1]
            for h, d in zip(checked, d_out):
                assert np.array_equal(h, gd.to_numpy(d), equal_nan=True), (kind, flags, write)


@pytest.mark.gpu
@pytest.mark.parametrize("name,kw", [CONFIGS[3], CONFIGS[9]], ids=[IDS[3], IDS[9]])
def test_fused_update_and_flat_step_on_the_device_match_the_cpu(name, kw):
    params, grads = problem(np.float32, np.random.default_rng(6))
    opt = getattr(optim, name)(**kw)
    cpu_p, cpu_s = run(opt, params, grads)
    dev = gd.to_device((params, grads), "cuda")
    dev_p, dev_s = run(opt, *dev)
    assert same_bits(host(dev_p), cpu_p) and same_bits(host(dev_s), cpu_s)
    flat = FlatTrees.adopt(opt, dev[0], opt.init(dev[0]))
    for g in dev[1]:
        assert flat.load_grads(g)
        flat.apply()
    assert gd.backend.device_of(flat.flat_p) == "cuda"
    assert same_bits(host(flat.params), cpu_p)
