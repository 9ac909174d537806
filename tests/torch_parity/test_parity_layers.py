"""PyTorch parity (CPU, float64): nn layers with weights copied from torch modules by name.

Each test builds a torch module and the matching gpudl layer, checks that gpudl's
``init`` produces the same flat parameter names (``gd.tree.flatten_with_paths``) and
shapes as the torch ``state_dict`` (attention included: ``in_proj_weight``,
``multihead_attn``), copies torch's weights over, and compares outputs and the
gradients of a loss with respect to every parameter and the input.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import functional as F
from gpudl import models, nn
from gpudl.tree import flatten_with_paths, unflatten_paths

torch = pytest.importorskip("torch")
from parity_helpers import rand  # noqa: E402
from torch.func import functional_call  # noqa: E402

RTOL, ATOL = 1e-10, 1e-12


def identity_map(flat: dict) -> dict:
    return unflatten_paths(dict(flat))


def check_layer(layer, tmodule, x, t_call=None, gd_input=None, convert=identity_map,
                loss="cot", train=False, state=None, x_grad=True, seed=1):
    """Compare ``layer`` and ``tmodule`` (weights copied) on ``x``; returns gpudl's new state.

    ``loss="cot"``: sum(y * cotangent); an int array: cross-entropy with those labels.
    ``t_call(module, params, x_tensor)`` runs torch (default: functional_call on x).
    """
    tmodule = tmodule.double()
    sd = {k: v.detach().numpy().copy() for k, v in tmodule.named_parameters()}
    make = gd_input or (lambda v: v)  # builds the layer's input from the raw array
    gd_in = make(x)
    init_params, init_state = layer.init(gd.random.key(0), gd_in)
    params = convert(sd)
    got = {k: np.shape(v) for k, v in flatten_with_paths(init_params)}
    want = {k: np.shape(v) for k, v in flatten_with_paths(params)}
    assert got == want, "gpudl parameter names/shapes differ from torch's state_dict"
    state = init_state if state is None else state

    y, new_state = layer.apply(params, state, gd_in, train=train)
    tx = torch.tensor(x, requires_grad=x_grad and np.issubdtype(x.dtype, np.floating))
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in sd.items()}
    t_call = t_call or (lambda m, p, xt: functional_call(m, p, (xt,)))
    ty = t_call(tmodule, tparams, tx)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=RTOL, atol=ATOL)

    if isinstance(loss, str):
        cot = np.random.default_rng(seed).standard_normal(y.shape)

        def gd_loss(p, xin):
            return gd.ops.sum(layer.apply(p, state, make(xin), train=train)[0] * cot)

        t_loss = (ty * torch.tensor(cot)).sum()
    else:
        def gd_loss(p, xin):
            return F.softmax_cross_entropy(layer.apply(p, state, make(xin), train=train)[0], loss)

        t_loss = torch.nn.functional.cross_entropy(ty, torch.tensor(loss))
    x_grad = x_grad and tx.requires_grad
    argnums = (0, 1) if x_grad else 0
    grads = gd.grad(gd_loss, argnums=argnums)(params, x)
    p_grads = grads[0] if x_grad else grads
    t_inputs = list(tparams.values()) + ([tx] if x_grad else [])
    t_grads = torch.autograd.grad(t_loss, t_inputs)
    t_pg = convert({k: g.numpy() for k, g in zip(tparams, t_grads)})
    ref = dict(flatten_with_paths(t_pg))
    for k, g in flatten_with_paths(p_grads):
        np.testing.assert_allclose(g, ref[k], rtol=RTOL, atol=ATOL, err_msg=f"grad of {k}")
    if x_grad:
        np.testing.assert_allclose(grads[1], t_grads[-1].numpy(), rtol=RTOL, atol=ATOL)
    return new_state


# ----------------------------------------------------------------------------- dense / conv
@pytest.mark.parametrize("bias", [True, False])
def test_linear(bias):
    check_layer(nn.Linear(5, bias=bias), torch.nn.Linear(4, 5, bias=bias), rand(3, 2, 4, seed=1))


@pytest.mark.parametrize("kw", [dict(kernel_size=3), dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=(3, 2), padding="same", dilation=2),
                                dict(kernel_size=3, groups=2, bias=False)], ids=str)
def test_conv2d(kw):
    check_layer(nn.Conv2d(6, **kw), torch.nn.Conv2d(4, 6, **kw), rand(2, 4, 7, 6, seed=2))


@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=2, padding=1, output_padding=1),
                                dict(kernel_size=2, stride=2, groups=2),
                                dict(kernel_size=3, dilation=2, bias=False)], ids=str)
def test_conv_transpose2d(kw):
    check_layer(nn.ConvTranspose2d(6, **kw), torch.nn.ConvTranspose2d(4, 6, **kw),
                rand(2, 4, 4, 3, seed=3))


def test_conv1d():
    check_layer(nn.Conv1d(5, 3, stride=2, padding=1), torch.nn.Conv1d(2, 5, 3, stride=2, padding=1),
                rand(2, 2, 9, seed=4))


# ----------------------------------------------------------------------------- normalization
@pytest.mark.parametrize("momentum", [0.1, 0.3])
def test_batchnorm2d_train_then_eval(momentum):
    tm = torch.nn.BatchNorm2d(3, momentum=momentum).double()
    with torch.no_grad():  # non-trivial affine parameters
        tm.weight.copy_(torch.tensor(rand(3, seed=5)))
        tm.bias.copy_(torch.tensor(rand(3, seed=6)))
    layer = nn.BatchNorm2d(momentum=momentum)
    state = None
    for step in range(2):  # two training steps, the second from the updated state
        x = rand(4, 3, 3, 2, seed=10 + step) * 2 + 1
        tm.train()
        state = check_layer(layer, tm, x, train=True, state=state)
        # functional_call swaps in the parameters only: the training forward updated the
        # module's own running-statistics buffers in place
        np.testing.assert_allclose(state["running_mean"], tm.running_mean.numpy(), rtol=RTOL)
        np.testing.assert_allclose(state["running_var"], tm.running_var.numpy(), rtol=RTOL)
    tm.eval()
    x = rand(2, 3, 3, 2, seed=20)
    new_state = check_layer(layer, tm, x, train=False, state=state)
    np.testing.assert_array_equal(new_state["running_mean"], state["running_mean"])


def test_batchnorm1d_train():
    check_layer(nn.BatchNorm1d(), torch.nn.BatchNorm1d(3), rand(5, 3, 4, seed=21), train=True)


@pytest.mark.parametrize("normalized_shape", [None, (3, 4)])
def test_layernorm(normalized_shape):
    tm = torch.nn.LayerNorm(normalized_shape or 4)
    with torch.no_grad():
        tm.weight.copy_(torch.tensor(rand(*tm.weight.shape, seed=22)))
        tm.bias.copy_(torch.tensor(rand(*tm.bias.shape, seed=23)))
    check_layer(nn.LayerNorm(normalized_shape), tm, rand(2, 3, 4, seed=24) * 3)


def test_embedding():
    idx = np.array([[1, 4, 4], [0, 2, 1]])
    check_layer(nn.Embedding(5, 3), torch.nn.Embedding(5, 3), idx, x_grad=False)


def test_embedding_padding_idx():
    idx = np.array([[1, 0, 4], [0, 2, 0]])
    tm = torch.nn.Embedding(5, 3, padding_idx=0)
    with torch.no_grad():
        tm.weight[0] = torch.tensor([0.5, -1.0, 2.0])  # a non-zero padding row
    check_layer(nn.Embedding(5, 3, padding_idx=0), tm, idx, x_grad=False)


@pytest.mark.parametrize("num_parameters", [1, 3])
def test_prelu(num_parameters):
    tm = torch.nn.PReLU(num_parameters)
    with torch.no_grad():
        tm.weight.copy_(torch.linspace(0.1, 0.4, num_parameters))
    x = rand(2, 3, 4, seed=25)
    check_layer(nn.PReLU(num_parameters), tm, np.where(np.abs(x) < 0.05, 0.2, x))


# ----------------------------------------------------------------------------- attention
@pytest.mark.parametrize("masks", ["none", "key_mask", "attn_mask", "both"])
def test_multihead_attention(masks):
    e, heads, n, lq, lk = 8, 2, 2, 3, 4
    tm = torch.nn.MultiheadAttention(e, heads, batch_first=True)
    with torch.no_grad():  # torch zeroes the biases at init: make them count
        tm.in_proj_bias.copy_(torch.tensor(rand(3 * e, seed=30)))
        tm.out_proj.bias.copy_(torch.tensor(rand(e, seed=31)))
    q, kv = rand(n, lq, e, seed=32), rand(n, lk, e, seed=33)
    keep_keys = np.array([[True, True, False, True], [True, False, False, True]])
    keep = np.array([[True, False, True, True], [True, True, False, False],
                     [False, True, True, True]])
    use_km, use_am = masks in ("key_mask", "both"), masks in ("attn_mask", "both")

    def gd_input(x):
        return {"query": x, "key": kv, "value": kv, "mask": keep if use_am else None,
                "key_mask": keep_keys if use_km else None}

    def t_call(m, p, xt):
        kvt = torch.tensor(kv)
        # torch's module masks are True = masked out: the opposite of gpudl's True = keep
        return functional_call(m, p, (xt, kvt, kvt), dict(
            key_padding_mask=torch.tensor(~keep_keys) if use_km else None,
            attn_mask=torch.tensor(~keep) if use_am else None, need_weights=False))[0]

    check_layer(nn.MultiHeadAttention(heads), tm, q, t_call=t_call, gd_input=gd_input,
                convert=identity_map)  # torch's keys: in_proj_weight, in_proj_bias, out_proj


def test_multi_head_attention_weights_per_head():
    e, heads = 6, 3
    tm = torch.nn.MultiheadAttention(e, heads, batch_first=True).double()
    x = rand(2, 4, e, seed=34)
    w = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    wq, wk, wv = np.split(w["in_proj_weight"], 3)
    bq, bk, bv = np.split(w["in_proj_bias"], 3)
    y, att = F.multi_head_attention(x, x, x, heads, wq, wk, wv, w["out_proj.weight"], bq, bk, bv,
                                    w["out_proj.bias"], causal=True, return_weights=True)
    causal_blocked = torch.triu(torch.ones(4, 4, dtype=torch.bool), 1)
    ty, tatt = tm(*(torch.tensor(x),) * 3, attn_mask=causal_blocked, average_attn_weights=False)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(att, tatt.detach().numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("key_mask", [False, True])
def test_transformer_encoder_layer(norm_first, activation, key_mask):
    e, heads, ff = 8, 2, 16
    tm = torch.nn.TransformerEncoderLayer(e, heads, ff, dropout=0.0, activation=activation,
                                          batch_first=True, norm_first=norm_first)
    with torch.no_grad():
        for i, (name, p) in enumerate(tm.named_parameters()):
            if name.endswith("bias") or name.startswith("norm"):
                p.copy_(torch.tensor(rand(*p.shape, seed=100 + i)))
    tm.eval()
    keep = np.array([[True, True, True, False, False], [True, True, True, True, True]])
    x = rand(2, 5, e, seed=35)

    def gd_input(x):
        return {"x": x, "key_mask": keep} if key_mask else x

    def t_call(m, p, xt):
        kpm = torch.tensor(~keep) if key_mask else None
        return functional_call(m, p, (xt,), dict(src_key_padding_mask=kpm))

    check_layer(nn.TransformerEncoderLayer(heads, ff, dropout=0.0, norm_first=norm_first,
                                           activation=activation),
                tm, x, t_call=t_call, gd_input=gd_input)


# ----------------------------------------------------------------------------- a whole CNN
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("memory_mask", [False, True])
def test_transformer_decoder_layer(norm_first, memory_mask):
    e, heads, ff, lt, lm = 8, 2, 12, 4, 5
    tm = torch.nn.TransformerDecoderLayer(e, heads, ff, dropout=0.0, batch_first=True,
                                          norm_first=norm_first)
    with torch.no_grad():
        for i, (name, p) in enumerate(tm.named_parameters()):
            if name.endswith("bias") or name.startswith("norm"):
                p.copy_(torch.tensor(rand(*p.shape, seed=100 + i)))
    tm.eval()
    memory = rand(2, lm, e, seed=37)
    keep = np.array([[True, True, False, True, False], [True, True, True, True, True]])
    x = rand(2, lt, e, seed=38)

    def gd_input(x):
        return {"x": x, "memory": memory, "memory_key_mask": keep if memory_mask else None}

    def t_call(m, p, xt):
        blocked = torch.triu(torch.ones(lt, lt, dtype=torch.bool), 1)  # True = masked out
        kpm = torch.tensor(~keep) if memory_mask else None
        return functional_call(m, p, (xt, torch.tensor(memory)), dict(
            tgt_mask=blocked, memory_key_padding_mask=kpm))

    check_layer(nn.TransformerDecoderLayer(heads, ff, dropout=0.0, norm_first=norm_first),
                tm, x, t_call=t_call, gd_input=gd_input)  # torch's keys: multihead_attn


def torch_lenet5():
    tnn = torch.nn
    return tnn.Sequential(
        tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
        tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, 10))


def test_lenet5_cross_entropy():
    torch.manual_seed(0)
    tm = torch_lenet5()
    # gpudl's Sequential keys children by position as torch does: no renaming table
    x = np.random.default_rng(36).uniform(0, 1, (4, 1, 28, 28))
    y = np.array([3, 0, 9, 3])
    check_layer(models.lenet5(activation="relu", pool="max"), tm, x, loss=y)
