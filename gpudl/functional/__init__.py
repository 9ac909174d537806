"""Neural-net ops: conv, pool, activations, losses, norm, dropout, rnn, attention, graph.

Torch shapes and conventions: NCHW activations, OIHW conv weights, Linear weight
(out, in), LSTM gate order (i, f, g, o), GRU (r, z, n). Kernel-backed ops (conv, pool,
softmax-cross-entropy, LSTM/GRU cells) run a CUDA kernel on CuPy arrays and a NumPy twin
on NumPy arrays, behind one primitive.

Example:
    >>> import numpy as np
    >>> from gpudl import functional as F
    >>> F.relu(np.array([-1.0, 2.0])).tolist()
    [0.0, 2.0]
"""

from gpudl.functional.activations import (
    elu,
    erf,
    gelu,
    get_activation,
    hardtanh,
    identity,
    leaky_relu,
    log_softmax,
    maxout,
    prelu,
    relu,
    selu,
    silu,
    softmax,
    softplus,
    step,
    swish,
)
from gpudl.functional.attention import (
    additive_attention,
    additive_attention_scores,
    causal_mask,
    masked_softmax,
    multi_head_attention,
    scaled_dot_product_attention,
    sinusoidal_positional_encoding,
)
from gpudl.functional.conv import (
    conv1d,
    conv2d,
    conv2d_backward_data,
    conv2d_backward_weight,
    conv_transpose2d,
)
from gpudl.functional.cross_entropy import softmax_cross_entropy
from gpudl.functional.dropout import dropout
from gpudl.functional.embedding import embedding
from gpudl.functional.graph import (
    add_self_loops,
    gat_conv,
    gcn_conv,
    gcn_norm_adjacency,
    gcn_norm_edges,
    message_passing,
    readout,
    segment_max,
    segment_mean,
    segment_softmax,
)
from gpudl.functional.linear import linear
from gpudl.functional.losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    gan_discriminator_loss,
    gan_generator_loss,
    gaussian_kl,
    gaussian_nll_loss,
    huber_loss,
    kl_div,
    l1_loss,
    mse_loss,
    nll_loss,
    nt_xent,
    sequence_cross_entropy,
)
from gpudl.functional.normalization import batch_norm, layer_norm, local_response_norm
from gpudl.functional.pooling import (
    avg_pool2d,
    global_avg_pool2d,
    global_max_pool2d,
    lp_pool2d,
    max_pool2d,
    max_pool2d_with_indices,
)
from gpudl.functional.recurrent import gru, lstm, rnn, stacked, unstack
from gpudl.functional.regularizers import (
    contractive_penalty,
    contractive_penalty_sigmoid,
    l1_penalty,
    l2_penalty,
    sparsity_kl,
)
from gpudl.functional.rnn_cells import (
    gru_cell,
    gru_pointwise,
    lstm_cell,
    lstm_pointwise,
    rnn_cell,
)
from gpudl.ops import sigmoid, tanh

