"""Collation: a list of samples in, one batch out, with torch.utils.data's rules.

`default_collate` stacks tensors and NumPy arrays along a new dim 0, turns ints
into an int64 tensor and floats into a float64 one, keeps strings as a list, and
recurses into dicts, namedtuples, tuples and lists, keeping the container type
(tuples become lists, as in PyTorch). `collate` takes the per-type table
explicitly, so a custom collate_fn can extend `default_collate_fn_map` with its
own types instead of rewriting the recursion. `default_convert` is what a
DataLoader with batch_size=None applies: NumPy arrays become tensors, nothing
is stacked.

    >>> import tensora
    >>> default_collate([{"x": tensora.zeros(2), "y": 1}, {"x": tensora.ones(2), "y": 2}])
    {'x': tensor([[0., 0.],
            [1., 1.]]), 'y': tensor([1, 2])}
"""

from __future__ import annotations

import collections.abc
import copy
import re
from typing import Any, Callable

import numpy as np

from ..creation import as_tensor, tensor
from ..dtypes import float64
from ..ops.combine import stack
from ..tensor import Tensor

# NumPy dtype strings of bytes, strings and objects: arrays of these cannot become tensors.
np_str_obj_array_pattern = re.compile(r"[SaUO]")

default_collate_err_msg_format = ("default_collate: batch must contain tensors, numpy arrays, numbers, "
                                  "dicts or lists; found {}")

CollateFnMap = dict[Any, Callable[..., Any]]


def collate(batch: list, *, collate_fn_map: CollateFnMap | None = None) -> Any:
    """Collate `batch` using `collate_fn_map` (type -> fn(batch, *, collate_fn_map)) for the leaves.

    The exact type of the first sample is looked up first, then each key with
    isinstance, in the table's order; containers are recursed into.
    """
    elem = batch[0]
    elem_type = type(elem)
    if collate_fn_map is not None:
        if elem_type in collate_fn_map:
            return collate_fn_map[elem_type](batch, collate_fn_map=collate_fn_map)
        for collate_type, fn in collate_fn_map.items():
            if isinstance(elem, collate_type):
                return fn(batch, collate_fn_map=collate_fn_map)

    if isinstance(elem, collections.abc.Mapping):
        fields = {key: collate([d[key] for d in batch], collate_fn_map=collate_fn_map) for key in elem}
        return _rebuild_mapping(elem, fields)
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return elem_type(*(collate(s, collate_fn_map=collate_fn_map) for s in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        size = len(elem)
        if any(len(e) != size for e in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        columns = [collate(s, collate_fn_map=collate_fn_map) for s in zip(*batch)]  # tuples, as torch passes them
        if isinstance(elem, tuple):
            return columns  # PyTorch returns tuples as lists, for backwards compatibility
        return _rebuild_sequence(elem, columns)
    raise TypeError(default_collate_err_msg_format.format(elem_type))


def _rebuild_mapping(elem: collections.abc.Mapping, fields: dict) -> Any:
    # Keep the mapping's own type (OrderedDict, a user dict class) where it can be rebuilt.
    try:
        if isinstance(elem, collections.abc.MutableMapping):
            clone = copy.copy(elem)
            clone.update(fields)
            return clone
        return type(elem)(fields)
    except TypeError:
        return fields


def _rebuild_sequence(elem: collections.abc.Sequence, items: list) -> Any:
    try:
        if isinstance(elem, collections.abc.MutableSequence):
            clone = copy.copy(elem)
            for i, item in enumerate(items):
                clone[i] = item
            return clone
        return type(elem)(items)
    except TypeError:
        return items


def collate_tensor_fn(batch: list, *, collate_fn_map: CollateFnMap | None = None) -> Tensor:
    return stack(batch, 0)


def collate_numpy_array_fn(batch: list, *, collate_fn_map: CollateFnMap | None = None) -> Any:
    elem = batch[0]
    if np_str_obj_array_pattern.search(elem.dtype.str) is not None:
        raise TypeError(default_collate_err_msg_format.format(elem.dtype))
    return collate([as_tensor(b) for b in batch], collate_fn_map=collate_fn_map)


def collate_numpy_scalar_fn(batch: list, *, collate_fn_map: CollateFnMap | None = None) -> Tensor:
    return as_tensor(batch)


def collate_float_fn(batch: list, *, collate_fn_map: CollateFnMap | None = None) -> Tensor:
    return tensor(batch, dtype=float64)


def collate_int_fn(batch: list, *, collate_fn_map: CollateFnMap | None = None) -> Tensor:
    return tensor(batch)


def collate_str_fn(batch: list, *, collate_fn_map: CollateFnMap | None = None) -> list:
    return batch


default_collate_fn_map: CollateFnMap = {
    Tensor: collate_tensor_fn,
    np.ndarray: collate_numpy_array_fn,  # np.memmap too (a subclass)
    (np.bool_, np.number, np.object_): collate_numpy_scalar_fn,  # NumPy scalars, not string ones
    float: collate_float_fn,
    int: collate_int_fn,  # bool too: a bool tensor, as torch.tensor([True]) gives
    str: collate_str_fn,
    bytes: collate_str_fn,
}


def default_collate(batch: list) -> Any:
    """Stack a list of samples into a batch (torch.utils.data.default_collate's rules).

    >>> import tensora
    >>> default_collate([(tensora.zeros(3), 0), (tensora.ones(3), 1)])[1]
    tensor([0, 1])
    """
    return collate(batch, collate_fn_map=default_collate_fn_map)


def default_convert(data: Any) -> Any:
    """Turn NumPy arrays and scalars inside `data` into tensors, recursing into containers; no stacking."""
    if isinstance(data, Tensor):
        return data
    data_type = type(data)
    if data_type.__module__ == "numpy" and data_type.__name__ not in ("str_", "bytes_"):
        if isinstance(data, np.ndarray) and np_str_obj_array_pattern.search(data.dtype.str) is not None:
            return data
        return as_tensor(data)
    if isinstance(data, collections.abc.Mapping):
        return _rebuild_mapping(data, {key: default_convert(data[key]) for key in data})
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # namedtuple
        return data_type(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, collections.abc.Sequence) and not isinstance(data, (str, bytes)):
        return _rebuild_sequence(data, [default_convert(d) for d in data])
    return data
