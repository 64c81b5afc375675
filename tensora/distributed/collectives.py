"""Collectives and point-to-point ops on tensors, as torch.distributed spells them.

Every function runs on the default group (init_process_group). Results land in
place where torch puts them (all_reduce and broadcast overwrite `tensor`,
all_gather fills the outputs given); with `async_op=True` a Work is returned
and the tensors may be read only after `work.wait()`. Tensors must be CPU and
contiguous: the backend reads and writes their arrays directly, no copies.

    >>> import tensora, tensora.distributed as dist
    >>> dist.init_process_group("mpi")                      # doctest: +SKIP
    >>> t = tensora.ones(4) * (dist.get_rank() + 1)           # doctest: +SKIP
    >>> dist.all_reduce(t, op=dist.ReduceOp.SUM)            # doctest: +SKIP
    >>> t.tolist()                                          # 2 ranks: 1 + 2   # doctest: +SKIP
    [3.0, 3.0, 3.0, 3.0]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import fmt_shape
from ..tensor import Tensor
from .errors import DistributedError
from .group import default_group
from .reduce_op import ReduceOp
from .work import Work


def _array(t: Tensor, what: str = "tensor") -> np.ndarray:
    if not isinstance(t, Tensor):
        raise TypeError(f"{what} must be a tensora.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise DistributedError(f"the {default_group().backend!r} backend handles CPU tensors; {what} is on "
                               f"{t.device} (CUDA tensors need backend='nccl')")
    a = t._data
    if not a.flags.c_contiguous:
        raise DistributedError(f"{what} must be contiguous (call .contiguous() first); shape {fmt_shape(t.shape)}")
    return a


def _check_rank(rank: int, what: str) -> int:
    size = default_group().size
    if not 0 <= rank < size:
        raise DistributedError(f"{what}={rank} is not a rank of this world of size {size}")
    return rank


def all_reduce(tensor: Tensor, op: ReduceOp = ReduceOp.SUM, async_op: bool = False) -> Work | None:
    """Combine `tensor` across ranks with `op`; every rank ends with the result, in place."""
    a = _array(tensor)
    tensor._bump_version()
    return default_group().all_reduce(a, op, async_op)


def broadcast(tensor: Tensor, src: int, async_op: bool = False) -> Work | None:
    """Copy rank `src`'s `tensor` into every other rank's `tensor` (same shape and dtype everywhere)."""
    a = _array(tensor)
    _check_rank(src, "src")
    tensor._bump_version()
    return default_group().broadcast(a, src, async_op)


def all_gather_into_tensor(output_tensor: Tensor, input_tensor: Tensor, async_op: bool = False) -> Work | None:
    """Concatenate every rank's `input_tensor` along dim 0 (or stack, for a (world, ...) output) into the output."""
    group = default_group()
    out, a = _array(output_tensor, "output_tensor"), _array(input_tensor, "input_tensor")
    if out.dtype != a.dtype or out.size != a.size * group.size:
        raise DistributedError(f"all_gather_into_tensor: output {fmt_shape(out.shape)} {out.dtype} must hold "
                               f"{group.size} x input {fmt_shape(a.shape)} {a.dtype}")
    output_tensor._bump_version()
    return group.all_gather(out, a, async_op)


def all_gather(tensor_list: list[Tensor], tensor: Tensor, async_op: bool = False) -> Work | None:
    """Fill tensor_list[r] with rank r's `tensor` (one output per rank, each shaped like `tensor`)."""
    group = default_group()
    a = _array(tensor)
    if len(tensor_list) != group.size:
        raise DistributedError(f"all_gather needs one output tensor per rank ({group.size}), got {len(tensor_list)}")
    outs = [_array(t, "tensor_list entry") for t in tensor_list]
    for o in outs:
        if o.shape != a.shape or o.dtype != a.dtype:
            raise DistributedError(f"all_gather outputs must be shaped like the input {fmt_shape(a.shape)} {a.dtype}"
                                   f", got {fmt_shape(o.shape)} {o.dtype}")
    stacked = np.empty((group.size, *a.shape), dtype=a.dtype)  # one collective, then one copy per output

    def scatter_out() -> None:
        for t, o, s in zip(tensor_list, outs, stacked):
            o[...] = s
            t._bump_version()
    work = group.all_gather(stacked, a, async_op)
    if work is None:
        scatter_out()
        return None
    return _then(work, scatter_out)


def reduce_scatter_tensor(output: Tensor, input: Tensor, op: ReduceOp = ReduceOp.SUM,
                          async_op: bool = False) -> Work | None:
    """Reduce `input` (world_size equal chunks along dim 0) across ranks; rank r keeps chunk r in `output`."""
    group = default_group()
    out, a = _array(output, "output"), _array(input, "input")
    if out.dtype != a.dtype or out.size * group.size != a.size:
        raise DistributedError(f"reduce_scatter_tensor: input {fmt_shape(a.shape)} must be {group.size} x output "
                               f"{fmt_shape(out.shape)}, same dtype")
    output._bump_version()
    return group.reduce_scatter(out, a, op, async_op)


def reduce_scatter(output: Tensor, input_list: Sequence[Tensor], op: ReduceOp = ReduceOp.SUM,
                   async_op: bool = False) -> Work | None:
    """Reduce input_list[r] across ranks into rank r's `output` (one input per rank, each shaped like output)."""
    group = default_group()
    out = _array(output, "output")
    if len(input_list) != group.size:
        raise DistributedError(f"reduce_scatter needs one input per rank ({group.size}), got {len(input_list)}")
    ins = [_array(t, "input_list entry") for t in input_list]
    if any(i.shape != out.shape or i.dtype != out.dtype for i in ins):
        raise DistributedError(f"reduce_scatter inputs must be shaped like the output {fmt_shape(out.shape)}")
    output._bump_version()
    return group.reduce_scatter(out, np.stack(ins), op, async_op)


def barrier(async_op: bool = False) -> Work | None:
    """Wait until every rank has reached this call."""
    return default_group().barrier(async_op)


def send(tensor: Tensor, dst: int, tag: int = 0) -> None:
    """Send `tensor` to rank `dst` (blocks until the buffer may be reused)."""
    default_group().send(_array(tensor), _check_rank(dst, "dst"), tag)


def recv(tensor: Tensor, src: int | None = None, tag: int = 0) -> int:
    """Receive into `tensor` from rank `src` (any rank if None); returns the sender's rank."""
    a = _array(tensor)
    tensor._bump_version()
    return default_group().recv(a, None if src is None else _check_rank(src, "src"), tag)


def isend(tensor: Tensor, dst: int, tag: int = 0) -> Work:
    """Start sending `tensor` to rank `dst`; do not write it before the Work is done."""
    return default_group().send(_array(tensor), _check_rank(dst, "dst"), tag, async_op=True)


def irecv(tensor: Tensor, src: int | None = None, tag: int = 0) -> Work:
    """Start receiving into `tensor`; `work.result()` is the sender's rank once done."""
    a = _array(tensor)
    tensor._bump_version()
    return default_group().recv(a, None if src is None else _check_rank(src, "src"), tag, async_op=True)


def _then(work: Work, fn) -> Work:
    """Run `fn` after `work`'s own completion step (chained, so it runs exactly once)."""
    inner = work._on_complete

    def both():
        result = inner() if inner is not None else None
        fn()
        return result
    work._on_complete = both
    return work
