"""tensora.nn.functional: torch.nn.functional's names, signatures and semantics.

This module is the table of contents. Layer cores that are plain ops
(convolution, pooling, dropout, attention, most activations) are the very
functions tensora.ops exports as tensora.<name>; the rest lives beside it:

    _activations.py    hardtanh/relu6, hardsigmoid, hardswish, logsigmoid, selu, celu, glu, prelu, ...
    _norms.py          layer_norm, group_norm, batch_norm, rms_norm (one fused op)
    _cross_entropy.py  cross_entropy, nll_loss (fused, no one-hot matrices)
    _losses.py         mse, l1, smooth_l1, huber, binary cross entropy, kl_div, cosine_embedding
    _layers.py         bilinear, embedding (max_norm, scale_grad_by_freq)
    _distance.py       normalize, cosine_similarity, pairwise_distance

    >>> import tensora
    >>> import tensora.nn.functional as F
    >>> x = tensora.tensor([[1.0, -1.0]])
    >>> F.relu(x).tolist(), F.cross_entropy(x, tensora.tensor([0])).item() < 0.2
    ([[1.0, 0.0]], True)
"""

from __future__ import annotations

from ..ops.activation import elu, gelu, leaky_relu, mish, relu, sigmoid, silu, softplus, tanh
from ..ops.attention import scaled_dot_product_attention
from ..ops.combine import pad
from ..ops.conv import conv1d, conv2d, conv3d, conv_transpose1d, conv_transpose2d, conv_transpose3d
from ..ops.dropout import dropout, dropout1d, dropout2d, dropout3d
from ..ops.gather import one_hot
from ..ops.interpolate import interpolate
from ..ops.linalg import linear
from ..ops.pool import (adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_avg_pool3d, avg_pool1d, avg_pool2d,
                        avg_pool3d, max_pool1d, max_pool2d, max_pool3d)
from ..ops.registry import FUNCTIONS as _OPS
from ._activations import (celu, glu, hardshrink, hardsigmoid, hardswish, hardtanh, hardtanh_, log_softmax,
                           logsigmoid, prelu, relu6, selu, softmax, softmin, softshrink, softsign, tanhshrink,
                           threshold, threshold_)
from ._cross_entropy import cross_entropy, nll_loss
from ._distance import cosine_similarity, normalize, pairwise_distance
from ._layers import bilinear, embedding
from ._losses import (binary_cross_entropy, binary_cross_entropy_with_logits, cosine_embedding_loss, huber_loss,
                      kl_div, l1_loss, mse_loss, smooth_l1_loss)
from ._norms import batch_norm, group_norm, layer_norm, rms_norm

# The in-place activations are registered functions without a module-level name of their own.
relu_ = _OPS["relu_"]
elu_ = _OPS["elu_"]
leaky_relu_ = _OPS["leaky_relu_"]

__all__ = [
    # activations
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu", "gelu", "silu", "mish",
    "softplus", "sigmoid", "tanh", "hardtanh", "hardtanh_", "hardsigmoid", "hardswish", "logsigmoid", "softsign",
    "tanhshrink", "hardshrink", "softshrink", "threshold", "threshold_", "glu", "prelu",
    "softmax", "log_softmax", "softmin",
    # layers
    "linear", "bilinear", "embedding", "one_hot",
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "interpolate", "pad", "dropout", "dropout1d", "dropout2d", "dropout3d", "scaled_dot_product_attention",
    # normalization and distances
    "layer_norm", "group_norm", "batch_norm", "rms_norm", "normalize", "cosine_similarity", "pairwise_distance",
    # losses
    "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "cross_entropy", "nll_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "kl_div", "cosine_embedding_loss",
]
