"""``gd.export_onnx``: each recipe that ONNX can express runs in onnxruntime as in gpudl.

Every model is exported from a batch of 2 and run at batch sizes 2 and 3 (the batch
dimension is symbolic), against ``model.apply(..., train=False)`` in float32 (rtol 1e-4).
Skips with the reason where the ``onnx`` extra is missing (conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import models, nn
from gpudl.autodiff import PRIMITIVES
from gpudl.errors import ExportError, GpudlError
from gpudl.export import OPSET
from gpudl.export.onnx_converters import CONVERTERS

# name -> (builder kwargs, example input shape for a batch of 2), small variants for speed
RECIPES = {
    "mlp": ({}, (2, 1, 28, 28)),
    "lenet5": ({"activation": "relu", "pool": "max"}, (2, 1, 28, 28)),
    "lenet5_1998": ({"activation": "sigmoid", "pool": "avg"}, (2, 1, 28, 28)),
    "alexnet": ({"small": True, "num_classes": 10}, (2, 3, 32, 32)),
    "vgg11": ({"num_classes": 10, "width": 0.125, "hidden": 32}, (2, 3, 32, 32)),
    "vgg11_bn": ({"num_classes": 10, "width": 0.125, "hidden": 32, "batch_norm": True},
                 (2, 3, 32, 32)),
    "nin": ({"small": True, "width": 0.25}, (2, 3, 32, 32)),
    "googlenet": ({"small": True, "width": 0.25, "num_classes": 10}, (2, 3, 64, 64)),
    "resnet20": ({}, (2, 3, 32, 32)),
    "resnet18": ({"num_classes": 10, "width": 8}, (2, 3, 32, 32)),
    "autoencoder": ({}, (2, 784)),
    "vae": ({}, (2, 784)),
    "conv_autoencoder": ({}, (2, 1, 28, 28)),
    "lstm_classifier": ({"num_outputs": 4}, (2, 5, 3)),
    "gru_classifier_2_layers": ({"num_outputs": 4, "kind": "gru", "num_layers": 2}, (2, 5, 3)),
    "rnn_classifier_bidirectional": ({"num_outputs": 4, "kind": "rnn", "bidirectional": True},
                                     (2, 5, 3)),
    "lstm_per_step": ({"num_outputs": 4, "per_step": True}, (2, 5, 3)),
    "gan_generator": ({}, (2, 64)),  # leaky_relu: a traced comparison inside ops.where
    "dcgan_discriminator": ({}, (2, 1, 28, 28)),
}
# deep ReLU nets whose untrained activations shrink layer by layer: larger inputs
INPUT_SCALE = {"googlenet": 1e3}
# token-id models: int64 ids (N, T) in, gathered by the embedding
TOKEN_RECIPES = {
    "transformer_classifier": {"vocab_size": 20, "num_classes": 3, "padding_idx": None},
    "gpt": {"vocab_size": 20, "d_model": 16, "num_heads": 2, "num_layers": 1},
    "char_lm": {"vocab_size": 20, "hidden": 16},
    "sequence_classifier": {"vocab_size": 20, "num_classes": 3, "hidden": 8},
}
_BUILDERS = {"lenet5_1998": "lenet5", "vgg11_bn": "vgg11", "lstm_classifier": "rnn_classifier",
             "gru_classifier_2_layers": "rnn_classifier", "lstm_per_step": "rnn_classifier",
             "rnn_classifier_bidirectional": "rnn_classifier"}


def _eval(model, params, state, x):
    out = model.apply(params, state, x, train=False)
    return np.asarray(gd.to_numpy(out[0] if isinstance(out, tuple) else out))


def _trained_state(state, rng):
    """BatchNorm statistics unlike the initial 0/1 (so eval mode is really checked), yet
    of a trained net's size (so the output still depends on the input)."""
    if isinstance(state, dict):
        return {k: (rng.normal(0, 0.1, np.shape(v)).astype(np.float32) if k == "running_mean"
                    else rng.uniform(0.5, 1.5, np.shape(v)).astype(np.float32)
                    if k == "running_var" else _trained_state(v, rng))
                for k, v in state.items()}
    return state


def _small_biases(params, rng):
    """Biases of 1e-3: with the initial ones an untrained deep net's output hardly depends
    on its input, and the comparison would check little beyond the last bias."""
    if isinstance(params, dict):
        return {k: rng.normal(0, 1e-3, np.shape(v)).astype(np.float32) if k == "bias"
                else _small_biases(v, rng) for k, v in params.items()}
    return params


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_exports_and_matches_onnxruntime_at_two_batch_sizes(name, tmp_path):
    import onnx
    import onnxruntime as ort

    kwargs, shape = RECIPES[name]
    model = models.get_model(_BUILDERS.get(name, name), **kwargs)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    params, state = model.init(0, x)
    state = _trained_state(state, np.random.default_rng(1))
    params = _small_biases(params, np.random.default_rng(2))
    path = tmp_path / f"{name}.onnx"
    proto = gd.export_onnx(model, params, state, x, path)

    loaded = onnx.load(str(path))
    onnx.checker.check_model(loaded, full_check=True)
    assert loaded.opset_import[0].version >= 17
    dims = loaded.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == list(shape[1:])
    keys = set(gd.state_dict(params, state))
    assert {i.name for i in proto.graph.initializer if not i.name.startswith("const")} <= keys

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (2, 3):
        xb = (rng.standard_normal((batch, *shape[1:])) * INPUT_SCALE.get(name, 1.0)
              ).astype(np.float32)
        (got,) = session.run(None, {"input": xb})
        want = _eval(model, params, state, xb)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        # untrained deep nets vary little with the input: check that variation on its own
        spread = np.ptp(want, axis=0).max()
        assert spread > 1e-5, spread
        np.testing.assert_allclose(got - got[:1], want - want[:1], rtol=0,
                                   atol=max(2e-2 * spread, 2e-7))


@pytest.mark.parametrize("name", list(TOKEN_RECIPES))
def test_token_model_exports_and_matches_onnxruntime_at_two_batch_sizes(name, tmp_path):
    import onnx
    import onnxruntime as ort

    model = models.get_model(name, **TOKEN_RECIPES[name])
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 20, (2, 6)).astype(np.int64)
    params, state = model.init(0, ids)
    path = tmp_path / f"{name}.onnx"
    gd.export_onnx(model, params, state, ids, path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (2, 3):
        xb = rng.integers(0, 20, (batch, 6)).astype(np.int64)
        (got,) = session.run(None, {"input": xb})
        np.testing.assert_allclose(got, _eval(model, params, state, xb), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "vgg11", "autoencoder", "transformer_classifier",
                                  "gpt"])
def test_an_example_of_one_row_exports_a_graph_for_any_batch(name, tmp_path):
    # a reshape that merges the batch, (1, C, H, W) -> (1, C*H*W), hides the batch axis at
    # batch 1: the graph ran only at batch 1 until the export traced two rows
    import onnxruntime as ort

    model = models.get_model(_BUILDERS.get(name, name), **(
        TOKEN_RECIPES[name] if name in TOKEN_RECIPES else RECIPES[name][0]))
    rng = np.random.default_rng(0)
    if name in TOKEN_RECIPES:
        one, many = (rng.integers(1, 20, (b, 6)).astype(np.int64) for b in (1, 4))
    else:
        shape = RECIPES[name][1][1:]
        one, many = (rng.standard_normal((b, *shape)).astype(np.float32) for b in (1, 4))
    params, state = model.init(0, one)
    path = tmp_path / f"{name}.onnx"
    gd.export_onnx(model, params, state, one, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for xb in (one, many):
        (got,) = session.run(None, {"input": xb})
        np.testing.assert_allclose(got, _eval(model, params, state, xb), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("padded_example", [False, True])
def test_a_padding_mask_from_the_ids_is_part_of_the_graph(padded_example, tmp_path):
    """TransformerClassifier(padding_idx=0) masks padded keys and mean-pools real tokens
    only; the export computes that mask from its input, whether or not the example had
    padding (an example without any once gave a graph that silently ignored padding)."""
    import onnxruntime as ort

    model = models.get_model("transformer_classifier", vocab_size=20, num_classes=3,
                             pooling="mean")
    ids = np.random.default_rng(0).integers(1, 20, (2, 6)).astype(np.int64)
    if padded_example:
        ids[1, 4:] = 0
    params, state = model.init(0, ids)
    gd.export_onnx(model, params, state, ids, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    xb = np.random.default_rng(1).integers(1, 20, (3, 6)).astype(np.int64)
    xb[0, 3:], xb[2, 1:] = 0, 0  # padding of different lengths per row
    (got,) = session.run(None, {"input": xb})
    want = _eval(model, params, state, xb)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # the padding really changes the output (so the check above tests the mask)
    unmasked = models.get_model("transformer_classifier", vocab_size=20, num_classes=3,
                                pooling="mean", padding_idx=None)
    assert not np.allclose(_eval(unmasked, params, state, xb)[0], want[0], atol=1e-4)


def test_a_mask_computed_from_the_ids_in_numpy_is_a_named_error(tmp_path):
    from gpudl.nn.base import Layer

    class NumpyMaskClassifier(Layer):  # the padding mask from np.asarray: not exportable
        def __init__(self):
            super().__init__(None)
            self.inner = models.get_model("transformer_classifier", vocab_size=20,
                                          num_classes=3, padding_idx=None)

        def init(self, key, ids):
            return self.inner.init(key, ids)

        def apply(self, params, state, ids, *, train=False, key=None):
            keep = np.asarray(ids) != 0
            return self.inner.apply(params, state, {"ids": ids, "lengths": keep.sum(1)},
                                    train=train)

    model = NumpyMaskClassifier()
    ids = np.ones((2, 6), np.int64)
    params, state = model.init(0, ids)
    with pytest.raises(ExportError, match=r"turns its input .* into a NumPy array"):
        gd.export_onnx(model, params, state, ids, tmp_path / "m.onnx")


def test_k_sparse_autoencoder_exports_its_top_k_choice(tmp_path):
    """k_sparse keeps each row's k largest codes with gd.ops.top_k_mask: the export does the
    same with TopK, row by row (it once refused: the choice was made in NumPy)."""
    import onnxruntime as ort

    model = models.get_model("k_sparse_autoencoder")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 784)).astype(np.float32)
    params, state = model.init(0, x)
    gd.export_onnx(model, params, state, x, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    xb = rng.standard_normal((3, 784)).astype(np.float32)
    (got,) = session.run(None, {"input": xb})
    np.testing.assert_allclose(got, _eval(model, params, state, xb), rtol=1e-4, atol=1e-5)


def test_top_k_mask_converter_keeps_the_lower_index_on_ties(tmp_path):
    import onnxruntime as ort

    from gpudl.nn.base import Layer

    class TopTwo(Layer):
        def init(self, key, x):
            return {}, {}

        def apply(self, params, state, x, *, train=False, key=None):
            return x * gd.ops.astype(gd.ops.top_k_mask(x, 2, axis=1), x.dtype), state

    x = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]], np.float32)
    gd.export_onnx(TopTwo(), {}, {}, x, tmp_path / "t.onnx")
    session = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x})
    want = np.array([[0, 3, 3, 0], [2, 2, 0, 0]], np.float32)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.asarray(TopTwo().apply({}, {}, x)[0]), want)


def test_a_mask_computed_in_numpy_from_a_float_input_is_a_named_error(tmp_path):
    from gpudl.nn.base import Layer

    class NumpyTopK(Layer):  # the k_sparse of before: argpartition on the raw values
        def init(self, key, x):
            return {}, {}

        def apply(self, params, state, x, *, train=False, key=None):
            raw = gd.autodiff.unbox_all(x)
            keep = (np.argsort(np.argsort(-raw, axis=1), axis=1) < 2).astype(raw.dtype)
            return x * keep, state

    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    with pytest.raises(ExportError, match=r"primitive 'multiply' .* differs along the batch"):
        gd.export_onnx(NumpyTopK(), {}, {}, x, tmp_path / "m.onnx")


def test_params_are_initializers_named_with_torch_keys(tmp_path):
    model = models.lenet5()
    x = np.zeros((2, 1, 28, 28), np.float32)
    params, state = model.init(0, x)
    proto = gd.export_onnx(model, params, state, x, tmp_path / "m.onnx")
    named = {i.name: i for i in proto.graph.initializer}
    for key, value in gd.state_dict(params, state).items():
        assert key in named, key
        assert tuple(named[key].dims) == tuple(np.shape(value))


class _Det(nn.Layer):
    """A layer that uses a primitive with no ONNX converter (det)."""

    def init(self, key, x):
        return {}, {}

    def apply(self, params, state, x, *, train=False, key=None):
        return gd.ops.det(x), state


def test_an_op_without_a_converter_is_a_named_error_naming_the_op(tmp_path):
    model = nn.Sequential([_Det()])
    x = np.eye(3, dtype=np.float32)[None].repeat(2, axis=0)
    params, state = model.init(0, x)
    with pytest.raises(ExportError) as info:
        gd.export_onnx(model, params, state, x, tmp_path / "m.onnx")
    assert isinstance(info.value, GpudlError) and isinstance(info.value, NotImplementedError)
    assert "primitive 'det'" in str(info.value) and "no ONNX converter" in str(info.value)
    assert "test_export_onnx.py" in str(info.value)  # where the model used it
    assert not (tmp_path / "m.onnx").exists()


def test_opset_below_17_and_integer_examples_are_refused(tmp_path):
    model = models.mlp(hidden=(4,))
    x = np.zeros((2, 1, 28, 28), np.float32)
    params, state = model.init(0, x)
    with pytest.raises(ExportError, match="opset"):
        gd.export_onnx(model, params, state, x, tmp_path / "m.onnx", opset=13)
    with pytest.raises(ExportError, match="float array or integer ids"):
        gd.export_onnx(model, params, state, x.astype(np.complex64), tmp_path / "m.onnx")


def test_every_converter_is_a_registered_primitive():
    """Registered (differentiable) primitives, or the non-differentiable ones of gd.ops
    (comparisons, argmax: the exporter records them too), which are not registered."""
    import gpudl.functional  # noqa: F401  (registers the functional primitives)
    import gpudl.models  # noqa: F401
    from gpudl.autodiff import Primitive
    from gpudl.ops import elementwise, reductions

    nondifferentiable = {p.name for module in (elementwise, reductions)
                         for p in vars(module).values()
                         if isinstance(p, Primitive) and not p.differentiable}
    assert set(CONVERTERS) - set(PRIMITIVES) - nondifferentiable == set()
    assert OPSET >= 17


def test_gpudl_imports_and_gpudl_export_parses_without_onnx():
    """Only a call of gd.export_onnx needs the extra: it raises ModuleNotFoundError('onnx')."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['onnx'] = None\n"
            "import numpy as np, gpudl as gd\n"
            "from gpudl import cli\n"
            "net = gd.models.mlp(hidden=(4,)); x = np.zeros((2, 1, 28, 28), np.float32)\n"
            "p, s = net.init(0, x)\n"
            "try:\n    gd.export_onnx(net, p, s, x, 'never.onnx')\n"
            "except ImportError as e:\n    print('needs', e.name)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "needs onnx" in res.stdout
