"""Op families, each with forward and backward rules side by side.

Importing this package registers every op (table `autograd.OPS`) and every
public function (table `ops.registry.FUNCTIONS`, which also installs Tensor
methods). Find an op by its family: shape.py (views), index.py (x[k]),
inplace.py (x[k] = v, fill_, copy_), conversion.py (dtype/device moves),
elementwise.py (arithmetic, math, comparisons), reduce.py (sum, mean, ...),
linalg.py (matmul, ...).
"""

from . import conversion, elementwise, index, inplace, linalg, reduce, shape  # noqa: F401 - registration side effects
from .registry import FUNCTIONS

__all__ = ["FUNCTIONS"]
