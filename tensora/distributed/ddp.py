"""DistributedDataParallel: one model replica per rank, gradients averaged during backward.

As torch.nn.parallel.DistributedDataParallel: construction broadcasts rank 0's
parameters and buffers so every replica starts equal; each forward (in training
with grad enabled) arms the Reducer, whose hooks all-reduce bucketed gradients
while backward runs; after `loss.backward()` every rank holds the same averaged
`.grad`, so identical optimizers keep the replicas identical. With a per-rank
batch of B, that equals one process training on the concatenated N*B batch
(for a loss that is a mean over the batch).

    >>> model = DistributedDataParallel(net)                 # doctest: +SKIP
    >>> loss_fn(model(x), y).backward(); opt.step()          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import zlib
from typing import Any, Iterator

import numpy as np

from ..autograd import is_grad_enabled, no_grad
from ..nn import Module
from .errors import DistributedError
from .group import default_group
from .reduce_op import ReduceOp
from .reducer import Reducer


class DistributedDataParallel(Module):
    """Wrap `module` for data parallel training over the default process group.

    bucket_cap_mb: gradient bytes per all-reduce (bigger: fewer calls, less
    overlap). broadcast_buffers: copy rank 0's buffers (running statistics) to
    all ranks before each forward. find_unused_parameters: walk the graph after
    forward and treat parameters it does not reach as ready (costs a traversal
    and one small all-reduce per step); without it such parameters are an error.
    """

    def __init__(self, module: Module, bucket_cap_mb: float = 25, broadcast_buffers: bool = True,
                 find_unused_parameters: bool = False) -> None:
        super().__init__()
        group = default_group()
        self.module = module
        self.broadcast_buffers = broadcast_buffers
        self.find_unused_parameters = find_unused_parameters
        self.require_backward_grad_sync = True
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise DistributedError("DistributedDataParallel: the module has no parameters that require grad")
        self._buffers_synced = [b for _, b in module.named_buffers()]
        _check_same_layout(group, [p for _, p in named] + self._buffers_synced)
        with no_grad():
            for t in [p for _, p in module.named_parameters()] + self._buffers_synced:
                group.broadcast(t._data, 0)
                t._bump_version()
        self.reducer = Reducer([p for _, p in named], [n for n, _ in named], int(bucket_cap_mb * 2**20), group,
                               find_unused_parameters)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        group = default_group()
        sync = self.require_backward_grad_sync and is_grad_enabled()
        if sync:
            self.reducer.prepare_forward()
        if self.broadcast_buffers and self._buffers_synced and group.size > 1:
            for b in self._buffers_synced:
                group.broadcast(b._data, 0)
                b._bump_version()
        out = self.module(*args, **kwargs)
        if sync:
            self.reducer.prepare_backward(out)
        return out

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backwards inside accumulate into local .grad without communicating; the next synced one averages all.

        >>> with ddp.no_sync():                            # doctest: +SKIP
        ...     loss_fn(ddp(x1), y1).backward()
        >>> loss_fn(ddp(x2), y2).backward()                # doctest: +SKIP
        """
        old = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = old


def _check_same_layout(group: Any, tensors: list) -> None:
    """Every rank must wrap the same architecture: compare a fingerprint of shapes and dtypes before broadcasting."""
    text = ";".join(f"{tuple(t.shape)}{t._data.dtype}" for t in tensors).encode()
    mine = np.array([len(tensors), zlib.crc32(text)], dtype=np.int64)
    lo, hi = mine.copy(), mine.copy()
    group.all_reduce(lo, ReduceOp.MIN)
    group.all_reduce(hi, ReduceOp.MAX)
    if not (np.array_equal(lo, mine) and np.array_equal(hi, mine)):
        raise DistributedError("DistributedDataParallel: ranks wrap different models (parameter/buffer count, "
                               f"shapes or dtypes differ; this rank has {len(tensors)} tensors)")
