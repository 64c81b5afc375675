"""ZeRO stage 1: optimizer state sharded across ranks (torch.distributed.optim.ZeroRedundancyOptimizer).

Each parameter is owned by one rank (greedy by size, so ranks hold about 1/N of
the state each); a rank runs the wrapped optimizer on its own parameters only,
then every parameter is broadcast from its owner, so all replicas stay equal.
Gradients must already be averaged (DistributedDataParallel does that), which
makes each step equal to the plain optimizer's on the full batch.

Checkpoints are consolidated: `consolidate_state_dict(to)` gathers every
shard to one rank as the plain optimizer's state dict (parameters numbered in
the order given), so a file saved at N ranks loads at any M ranks, or into the
plain optimizer in a single process. State travels as JSON plus raw tensor
bytes (tensora.io.tree), never pickled.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable

import numpy as np

from ..io import tree
from ..optim import Adam
from ..tensor import Tensor
from .errors import DistributedError
from .group import default_group


def partition(sizes: list[int], world: int) -> list[int]:
    """Owner rank of each parameter: largest first, each to the least loaded rank (ties: lowest rank)."""
    load = [0] * world
    owner = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += sizes[i]
    return owner


class ZeroRedundancyOptimizer:
    """Wrap `optimizer_class(local params, **defaults)` so each rank keeps the state of its shard only.

    >>> opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=tensora.optim.Adam, lr=1e-3)  # doctest: +SKIP
    """

    def __init__(self, params: Iterable[Tensor], optimizer_class: type = Adam, **defaults: Any) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        if not all(isinstance(p, Tensor) for p in self.params):
            raise TypeError("ZeroRedundancyOptimizer takes a flat iterable of tensors (parameter groups are not "
                            "supported)")
        self.group = default_group()
        self.owner = partition([p.numel() for p in self.params], self.group.size)
        self.local = [i for i, r in enumerate(self.owner) if r == self.group.rank]
        self.optimizer_class = optimizer_class
        self.defaults = defaults
        # a rank may own nothing (more ranks than parameters); it then only receives broadcasts
        self.optim = optimizer_class([self.params[i] for i in self.local], **defaults) if self.local else None
        self._consolidated: dict[str, Any] | None = None

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update this rank's shard, then broadcast every parameter from its owner."""
        loss = self.optim.step(closure) if self.optim is not None else (closure() if closure else None)
        works = [self.group.broadcast(p._data, self.owner[i], async_op=True) for i, p in enumerate(self.params)]
        for w, p in zip(works, self.params):
            w.wait()
            p._bump_version()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:  # every parameter: each rank computes (and DDP averages) all the gradients
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad._data[...] = 0
                p.grad._bump_version()

    # -- checkpoints ----------------------------------------------------------------------
    def consolidate_state_dict(self, to: int = 0) -> None:
        """Gather every rank's shard onto rank `to` (all ranks must call); then `state_dict()` works there."""
        local_state: dict[int, Any] = {}
        groups: list = []
        if self.optim is not None:
            sd = self.optim.state_dict()
            local_state = {self.local[k]: v for k, v in sd["state"].items()}
            groups = [{k: v for k, v in g.items() if k != "params"} for g in sd["param_groups"]]
        blobs = self.group.gather_bytes(_pack({"state": local_state, "groups": groups}), to)
        if blobs is None:
            self._consolidated = None
            return
        state: dict[int, Any] = {}
        hyper = None
        for blob in blobs:
            part = _unpack(blob)
            state.update(part["state"])
            hyper = hyper or part["groups"]
        group = dict(hyper[0])
        group["params"] = list(range(len(self.params)))
        self._consolidated = {"state": dict(sorted(state.items())), "param_groups": [group]}

    def state_dict(self) -> dict[str, Any]:
        """The whole optimizer's state in the plain optimizer's format (after consolidate_state_dict on this rank)."""
        if self._consolidated is None:
            raise DistributedError(f"rank {self.group.rank} has no consolidated state: call "
                                   "consolidate_state_dict(to=this rank) on all ranks first")
        return self._consolidated

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a full (consolidated or plain-optimizer) state dict; this rank keeps its shard."""
        groups = state_dict["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise DistributedError(f"state dict holds {sum(len(g['params']) for g in groups)} parameters in "
                                   f"{len(groups)} groups; this optimizer has {len(self.params)} in one group")
        if self.optim is None:
            return
        order = groups[0]["params"]
        local = {}
        for j, i in enumerate(self.local):
            if order[i] in state_dict["state"]:
                local[j] = state_dict["state"][order[i]]
        group = {k: v for k, v in groups[0].items() if k != "params"}
        group["params"] = list(range(len(self.local)))
        self.optim.load_state_dict({"state": local, "param_groups": [group]})


def _pack(obj: Any) -> np.ndarray:
    """A state tree as bytes: 8-byte header length, JSON (tree + tensor table), then the raw tensor bytes."""
    tensors: dict[str, Any] = {}
    encoded = tree.encode(obj, "s", tensors)
    table, chunks, offset = [], [], 0
    for name, t in tensors.items():
        a = np.asarray(t._data if isinstance(t, Tensor) else t)
        a = a if a.flags.c_contiguous else a.copy()  # not ascontiguousarray: it turns 0-d (step) into 1-d
        table.append([name, a.dtype.name, list(a.shape), offset, a.nbytes])
        chunks.append(a.reshape(-1).view(np.uint8))
        offset += a.nbytes
    header = np.frombuffer(json.dumps({"tree": encoded, "tensors": table}).encode(), dtype=np.uint8)
    return np.concatenate([np.array([header.size], dtype=np.int64).view(np.uint8), header, *chunks])


def _unpack(blob: np.ndarray) -> Any:
    n = int(blob[:8].view(np.int64)[0])
    head = json.loads(blob[8:8 + n].tobytes())
    data = blob[8 + n:]
    tensors = {}
    for name, dtype, shape, offset, nbytes in head["tensors"]:
        tensors[name] = Tensor(data[offset:offset + nbytes].copy().view(np.dtype(dtype)).reshape(shape))
    return tree.decode(head["tree"], tensors, "<gathered optimizer state>")


def save_checkpoint(path: Any, *, model: Any = None, optimizer: Any = None, to: int = 0, **kwargs: Any) -> None:
    """tensora.save_checkpoint from a distributed run; every rank calls it, rank `to` writes (atomically).

    A ZeroRedundancyOptimizer is consolidated first and a DistributedDataParallel
    is saved as its inner module, so the file loads into plain objects at any
    world size: `tensora.load_checkpoint(path, model=net, optimizer=opt)`.
    kwargs (step, scheduler, rng, extra) pass through to tensora.save_checkpoint.
    """
    from ..io import save_checkpoint as save
    from .ddp import DistributedDataParallel
    group = default_group()
    if isinstance(optimizer, ZeroRedundancyOptimizer):
        optimizer.consolidate_state_dict(to)
    if isinstance(model, DistributedDataParallel):
        model = model.module
    if group.rank == to:
        save(path, model=model, optimizer=optimizer, **kwargs)
    group.barrier()  # nobody reads the file before it is in place
