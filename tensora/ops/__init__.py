"""Op families, each with forward and backward rules side by side.

Importing this package registers every op (table `autograd.OPS`) and every
public function (table `ops.registry.FUNCTIONS`, which also installs Tensor
methods). Find an op by its family:

- views and layout: shape.py (reshape, transpose, expand, ...), combine.py (cat, stack,
  split, pad, flip, ...), index.py (x[k]), inplace.py (x[k] = v, fill_, copy_),
  conversion.py (dtype/device moves), factory.py (x.new_zeros, x.new_tensor, ...)
- elementwise: elementwise.py (arithmetic), pointwise.py (math), activation.py,
  logical.py (bool and bit ops)
- reductions: reduce.py (sum, mean, var, max, norm, cumsum, ...), softmax.py, scan.py (cumprod),
  median.py (median, nanmedian)
- products and lookups: linalg.py (matmul, linear, einsum), gather.py (gather/scatter,
  embedding, sort, topk)
- images and sequences: conv.py, pool.py, interpolate.py, attention.py, dropout.py
- random draws from tensors: sampling.py (multinomial)
"""

import warnings

from . import (  # noqa: F401 - importing registers the ops
    activation, attention, combine, conv, conversion, dropout, elementwise, factory, gather, index, inplace,
    interpolate, linalg, logical, median, pointwise, pool, reduce, sampling, scan, shape, softmax,
)
from .registry import FUNCTIONS

# Ops give inf/nan where PyTorch does, silently; NumPy would warn from inside our
# modules. A filter scoped to tensora's modules costs nothing per call, unlike
# np.errstate (~1.4 us), and leaves the user's own NumPy warnings alone.
warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"tensora\.")

__all__ = ["FUNCTIONS"]
