"""The PyTorch side of ``cpu_vs_torch.py``: plain-torch twins of gpudl's model recipes.

Each twin has the same layers, the same parameter names (so ``gd.state_dict`` of the gpudl
model loads into it strictly: both sides start from the very same weights, hence the same
init scale) and computes the same function, written as a torch user writes it (torch's
own modules, no torchvision or PyG). ``cpu_vs_torch.py`` checks the equivalence on every
run: the first step's loss must agree on both sides before any time is taken.

Example:
    >>> net = torch_mlp(784, (256, 128), 10)
    >>> [k for k in net.state_dict()][:2]
    ['1.weight', '1.bias']
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as tF
from torch import nn


def torch_mlp(features: int, hidden: Sequence[int], classes: int) -> nn.Sequential:
    """``gpudl.models.mlp``: Flatten, (Linear, ReLU) per hidden width, Linear."""
    layers: list[nn.Module] = [nn.Flatten()]
    for width in hidden:
        layers += [nn.Linear(features, width), nn.ReLU()]
        features = width
    return nn.Sequential(*layers, nn.Linear(features, classes))


def torch_lenet5(classes: int = 10) -> nn.Sequential:
    """``gpudl.models.lenet5()``: the d2l LeNet-5 with sigmoid and average pooling, 28x28."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Sigmoid(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(),
        nn.Linear(84, classes))


class BasicBlock(nn.Module):
    """torchvision's BasicBlock (projection shortcut when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        h = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(h + (x if self.downsample is None else self.downsample(x)))


class CifarResNet(nn.Module):
    """``gpudl.models.cifar_resnet(depth, classes, width)``: He et al.'s CIFAR ResNet with
    1x1 projection shortcuts, torchvision's names (conv1, bn1, layer1..3, fc)."""

    def __init__(self, depth: int = 20, classes: int = 10, width: int = 16):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        for i in range(3):
            cout = width * 2 ** i
            blocks = [BasicBlock(cin, cout, 1 if i == 0 else 2)]
            blocks += [BasicBlock(cout, cout, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))


class CharLM(nn.Module):
    """``gpudl.models.sequence.CharLM``: Embedding -> LSTM (batch first) -> Linear."""

    def __init__(self, vocab: int, embed: int, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = nn.LSTM(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids):
        return self.head(self.rnn(self.embed(ids))[0])  # (N, T, V)


def sinusoidal_encoding(length: int, dim: int) -> torch.Tensor:
    """Vaswani et al.'s (length, dim) table: sin on even columns, cos on odd ones."""
    pos = np.arange(length, dtype=np.float64)[:, None]
    freq = 10000.0 ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
    pe = np.zeros((length, dim))
    pe[:, 0::2] = np.sin(pos * freq)
    pe[:, 1::2] = np.cos(pos * freq)[:, : dim // 2]
    return torch.from_numpy(pe.astype(np.float32))


class TransformerClassifier(nn.Module):
    """``gpudl.models.transformer.TransformerClassifier`` (post-LN, ReLU, no dropout, mean
    pooling over the non-padding tokens, padding id 0 masked out of attention)."""

    def __init__(self, vocab: int, classes: int, d_model: int, heads: int, ff_dim: int,
                 layers: int, length: int):
        super().__init__()
        self.d_model, self.layers = d_model, layers
        self.embed = nn.Embedding(vocab, d_model, padding_idx=0)
        for i in range(layers):
            setattr(self, f"layer{i + 1}", nn.TransformerEncoderLayer(
                d_model, heads, ff_dim, dropout=0.0, batch_first=True))
        self.head = nn.Linear(d_model, classes)
        self.register_buffer("pe", sinusoidal_encoding(length, d_model), persistent=False)

    def forward(self, ids):
        keep = ids != 0  # (N, T)
        h = self.embed(ids) * math.sqrt(self.d_model) + self.pe[: ids.shape[1]]
        for i in range(self.layers):
            h = getattr(self, f"layer{i + 1}")(h, src_key_padding_mask=~keep)
        m = keep.unsqueeze(-1).to(h.dtype)  # (N, T, 1)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.head(pooled)


class GCNLayer(nn.Module):
    """One GCN layer's parameters, gpudl's names: ``weight`` (out, in), ``bias`` (out,)."""

    def __init__(self, fan_in: int, fan_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(fan_out, fan_in))
        self.bias = nn.Parameter(torch.zeros(fan_out))


class GCN(nn.Module):
    """``gpudl.models.gnn.GCN`` (dropout 0) as PyG's GCNConv computes it with
    ``cached=True`` (gpudl caches its per-graph structure too), in plain torch: self-loops
    added, ``w_e = d_src^-1/2 d_dst^-1/2``, the normalised adjacency built once per graph as
    a sparse CSR matrix and propagated with ``torch.sparse.mm`` (MKL's sparse product, the
    fastest of torch's CPU paths here; ``index_add_`` scatter was slower), bias after
    propagation."""

    def __init__(self, features: int, hidden: int, classes: int):
        super().__init__()
        self.conv1, self.conv2 = GCNLayer(features, hidden), GCNLayer(hidden, classes)
        self._cached: tuple[Any, Callable] | None = None

    @staticmethod
    def propagator(n: int, edge_index: torch.Tensor) -> Callable:
        src, dst = edge_index
        keep = src != dst  # add_remaining_self_loops: one loop per node, last
        loops = torch.arange(n, dtype=edge_index.dtype)
        src, dst = torch.cat([src[keep], loops]), torch.cat([dst[keep], loops])
        deg = torch.zeros(n).index_add_(0, dst, torch.ones(dst.shape[0]))
        inv_sqrt = deg.rsqrt()  # every node has its loop: deg >= 1
        w = inv_sqrt[src] * inv_sqrt[dst]  # (E + n,)
        with warnings.catch_warnings():  # torch's "sparse CSR is beta" notice
            warnings.simplefilter("ignore", UserWarning)
            adj = torch.sparse_coo_tensor(torch.stack([dst, src]), w, (n, n)).coalesce()
            adj = adj.to_sparse_csr()
        return lambda h: torch.sparse.mm(adj, h)

    def forward(self, graph):
        edge_index = graph["edge_index"]
        if self._cached is None or self._cached[0] is not edge_index:
            self._cached = edge_index, self.propagator(graph["x"].shape[0], edge_index)
        prop = self._cached[1]
        h = torch.relu(prop(graph["x"] @ self.conv1.weight.T) + self.conv1.bias)
        return prop(h @ self.conv2.weight.T) + self.conv2.bias


def load_gpudl_weights(module: nn.Module, state_dict: dict[str, Any]) -> nn.Module:
    """Load ``gd.state_dict(params, state)`` into ``module`` strictly (dtypes kept: the
    BatchNorm counter stays int64, float32 stays float32)."""
    own = module.state_dict()
    module.load_state_dict({k: torch.as_tensor(np.asarray(v)).to(own[k].dtype)
                            for k, v in state_dict.items()}, strict=True)
    return module


def train_step(model: nn.Module, loss_fn: Callable, opt: torch.optim.Optimizer,
               x: Any, y: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A torch user's training step: zero_grad, forward, loss, backward, ``opt.step()``."""
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def sequence_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy of (N, T, V) logits against (N, T) labels."""
    return tF.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def backend_info() -> dict[str, Any]:
    """torch's version, BLAS (MKL here), oneDNN, CPU capability and thread counts."""
    config = torch.__config__.show()
    blas = next((part.split("=", 1)[1] for part in config.replace(",", " ").split()
                 if part.startswith("BLAS_INFO=")), "unknown")
    capability = next((line.split(":", 1)[1].strip() for line in config.splitlines()
                       if "CPU capability usage" in line), "unknown")
    return {"torch_version": torch.__version__, "torch_blas": blas,
            "mkl": torch.backends.mkl.is_available(),
            "onednn": torch.backends.mkldnn.is_available(), "cpu_capability": capability,
            "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}


def fit_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int,
              lr: float) -> Callable[[], torch.Tensor]:
    """A plain torch epoch (fresh Adam, as ``gd.fit`` starts one; in-order slices, no
    DataLoader): returns the mean batch loss, as fit's History holds it."""

    def epoch():
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        total = torch.zeros(())
        for i in range(0, len(x), batch):
            opt.zero_grad(set_to_none=True)
            loss = tF.cross_entropy(model(x[i:i + batch]), y[i:i + batch])
            loss.backward()
            opt.step()
            total += loss.detach()
        return total / -(-len(x) // batch)

    return epoch


def adam_update(model: nn.Module, grads: Sequence[np.ndarray],
                lr: float) -> Callable[[], list[torch.Tensor]]:
    """``opt.step()`` of ``torch.optim.Adam`` (its default, single-tensor on the CPU) with
    ``grads`` (in ``model.parameters()`` order) held fixed; returns the parameters."""
    params = list(model.parameters())
    for p, g in zip(params, grads, strict=True):
        p.grad = torch.from_numpy(np.array(g))
    opt = torch.optim.Adam(params, lr=lr)

    def update():
        opt.step()
        return [p.detach() for p in params]

    return update
