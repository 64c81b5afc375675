"""DataLoader: batches from a dataset, in the main process or in worker processes.

Same constructor as torch.utils.data.DataLoader, same argument checks and the
same batches. `shuffle=True` draws the order from `generator` (the default
generator if None): seed it and the order repeats. With num_workers > 0 batches
come back through shared memory (see workers.py) in exactly the order
num_workers=0 gives; `persistent_workers=True` keeps the processes between
epochs. `pin_memory` is accepted and does nothing on CPU.

    >>> import tensora
    >>> from tensora.data import DataLoader, TensorDataset
    >>> ds = TensorDataset(tensora.arange(10).float(), tensora.arange(10))
    >>> [y.tolist() for _, y in DataLoader(ds, batch_size=4)]
    [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    >>> len(DataLoader(ds, batch_size=4, drop_last=True))
    2
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections import deque
from typing import Any, Callable, Iterable, Iterator

from ..random import Generator, resolve
from .collate import default_collate, default_convert
from .dataset import IterableDataset
from .fetch import IterableFetcher, MapFetcher
from .sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler
from .workers import DataLoaderError, WorkerPool, WorkerSetup, raise_from_worker


def _default_context() -> Any:
    # fork starts workers in milliseconds and shares the dataset copy-on-write; spawn elsewhere.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


class DataLoader:
    """Iterate over `dataset` in batches.

    Args (as PyTorch's): batch_size (None: no batching, samples come one by one,
    NumPy converted to tensors), shuffle, sampler / batch_sampler (custom index
    orders; exclusive with shuffle and with each other's options), num_workers,
    collate_fn (default_collate), pin_memory (no-op), drop_last (drop the final
    short batch), timeout (seconds to wait for one batch from a worker, 0: no
    limit), worker_init_fn(worker_id) run in each worker after seeding,
    multiprocessing_context ('fork', 'spawn', ... or a context), generator (for
    shuffling and worker seeds), prefetch_factor (batches in flight per worker,
    default 2), persistent_workers.

    Workers: 'fork' where the platform has it, else 'spawn' (then the dataset,
    collate_fn and worker_init_fn must be picklable; tensors inside them travel
    through shared memory, never pickled). A batch's tensors and arrays in dicts, lists
    and tuples come back through shared memory too; one inside another object (a deque,
    a dataclass) is sent by value with it. Each pass draws one seed from
    `generator`; worker i seeds tensora, NumPy and `random` with seed + i. A
    dataset exception is raised again here with the worker's traceback; a worker
    that dies raises WorkerDiedError, a batch slower than `timeout` DataLoaderError.

        >>> import tensora
        >>> from tensora.data import DataLoader, TensorDataset
        >>> ds = TensorDataset(tensora.arange(8))
        >>> [b.tolist() for (b,) in DataLoader(ds, batch_size=3)]
        [[0, 1, 2], [3, 4, 5], [6, 7]]
        >>> [b.tolist() for (b,) in DataLoader(ds, batch_size=3, num_workers=2)]  # doctest: +SKIP
        [[0, 1, 2], [3, 4, 5], [6, 7]]
    """

    def __init__(self, dataset: Any, batch_size: int | None = 1, shuffle: bool | None = None,
                 sampler: Sampler | Iterable | None = None, batch_sampler: Sampler | Iterable | None = None,
                 num_workers: int = 0, collate_fn: Callable[[Any], Any] | None = None, pin_memory: bool = False,
                 drop_last: bool = False, timeout: float = 0, worker_init_fn: Callable[[int], Any] | None = None,
                 multiprocessing_context: Any = None, generator: Generator | None = None, *,
                 prefetch_factor: int | None = None, persistent_workers: bool = False) -> None:
        if num_workers < 0:
            raise ValueError("num_workers option should be non-negative; use num_workers=0 to disable "
                             "multiprocessing.")
        if timeout < 0:
            raise ValueError("timeout option should be non-negative")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError("prefetch_factor option could only be specified in multiprocessing. Let num_workers "
                             "> 0 to enable multiprocessing, otherwise set prefetch_factor to None.")
        if prefetch_factor is not None and prefetch_factor < 1:
            raise ValueError(f"prefetch_factor option should be a positive integer, got {prefetch_factor}")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")
        if multiprocessing_context is not None and num_workers == 0:
            raise ValueError("multiprocessing_context can only be used with multi-process loading "
                             f"(num_workers > 0), but got num_workers={num_workers}")

        is_iterable = isinstance(dataset, IterableDataset)
        if is_iterable:
            for name, value in (("shuffle", shuffle), ("sampler", sampler), ("batch_sampler", batch_sampler)):
                if value not in (None, False):
                    raise ValueError(f"DataLoader with IterableDataset: expected unspecified {name} option, "
                                     f"but got {name}={value}")
        shuffle = bool(shuffle)
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, "
                                 "and drop_last")
            batch_size, drop_last = None, False
        elif batch_size is None and drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually exclusive with "
                             "drop_last")
        if sampler is None and not is_iterable:
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None and not is_iterable:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)

        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.generator = generator
        self.prefetch_factor = prefetch_factor if prefetch_factor is not None or num_workers == 0 else 2
        self.persistent_workers = persistent_workers
        self.multiprocessing_context = (multiprocessing.get_context(multiprocessing_context)
                                        if isinstance(multiprocessing_context, str) else multiprocessing_context)
        self._is_iterable = is_iterable
        self._auto_collation = batch_size is not None if is_iterable else batch_sampler is not None
        self.collate_fn = collate_fn or (default_collate if self._auto_collation else default_convert)
        self._iterator: _MultiProcessIter | None = None

    @property
    def _index_sampler(self) -> Any:
        return self.batch_sampler if self._auto_collation else self.sampler

    def __len__(self) -> int:
        return _length(self)

    def __iter__(self) -> Iterator[Any]:
        if self.num_workers == 0:
            return _SingleProcessIter(self)
        if not self.persistent_workers:
            return _MultiProcessIter(self)
        if self._iterator is None:
            self._iterator = _MultiProcessIter(self)
        else:
            self._iterator.reset(self)
        return self._iterator


def _length(loader: DataLoader) -> int:
    if loader._is_iterable:
        n = len(loader.dataset)  # a TypeError if the stream has no length, as in PyTorch
        if loader.batch_size is not None:
            n = n // loader.batch_size if loader.drop_last else -(-n // loader.batch_size)
        return n
    return len(loader._index_sampler)


class _BaseIter:
    """One pass over a loader. Keeps no reference to the loader, so dropping it frees the workers."""

    def __init__(self, loader: DataLoader) -> None:
        self._start(loader)

    def _start(self, loader: DataLoader) -> None:
        try:
            self._len: int | None = _length(loader)
        except TypeError:
            self._len = None
        self._sampler_iter = None if loader._is_iterable else iter(loader._index_sampler)
        # One 63-bit draw per pass whatever num_workers is, so the shuffle order does not depend on it.
        self._base_seed = int(resolve(loader.generator).integers(0, 2**63))

    def __iter__(self) -> "_BaseIter":
        return self

    def __len__(self) -> int:
        if self._len is None:
            raise TypeError("this loader's dataset has no length")
        return self._len


class _SingleProcessIter(_BaseIter):
    def __init__(self, loader: DataLoader) -> None:
        super().__init__(loader)
        if loader._is_iterable:
            self._fetcher = IterableFetcher(loader.dataset, loader._auto_collation, loader.collate_fn,
                                            loader.batch_size, loader.drop_last)
        else:
            self._fetcher = MapFetcher(loader.dataset, loader._auto_collation, loader.collate_fn)

    def __next__(self) -> Any:
        index = None if self._sampler_iter is None else next(self._sampler_iter)
        return self._fetcher.fetch(index)


class _MultiProcessIter(_BaseIter):
    """Keeps prefetch_factor * num_workers tasks in flight, handed round-robin, and yields in task order."""

    def __init__(self, loader: DataLoader) -> None:
        super().__init__(loader)
        self._num_workers = loader.num_workers
        self._capacity = loader.prefetch_factor * loader.num_workers
        self._timeout = loader.timeout
        self._persistent = loader.persistent_workers
        self._is_iterable = loader._is_iterable
        self._pool = self._new_pool(loader)
        self._fill()

    def _new_pool(self, loader: DataLoader) -> WorkerPool:
        setup = WorkerSetup(loader.dataset, loader._is_iterable, loader._auto_collation, loader.collate_fn,
                            loader.batch_size, loader.drop_last, loader.worker_init_fn, loader.num_workers,
                            self._base_seed)
        return WorkerPool(setup, loader.multiprocessing_context or _default_context(), loader.prefetch_factor)

    def _fill(self) -> None:
        self._tasks: deque[int] = deque()  # the worker of each task in flight, oldest first
        self._active = [True] * self._num_workers
        self._cycle = itertools.cycle(range(self._num_workers))
        self._sampler_done = False
        for _ in range(self._capacity):
            self._dispatch()

    def reset(self, loader: DataLoader) -> None:
        """Start the next epoch on the same workers (persistent_workers)."""
        self._start(loader)
        if not self._pool.closed:
            try:
                self._pool.drain()  # what the last epoch left in flight when it stopped early
            except DataLoaderError:
                self._pool.close(wait=0)
                raise
        if self._pool.closed:  # a worker died last epoch: start afresh
            self._pool = self._new_pool(loader)
        elif self._is_iterable:
            self._pool.restart_iteration()
        self._fill()

    def _dispatch(self) -> None:
        if len(self._tasks) >= self._capacity or self._sampler_done:
            return
        if self._sampler_iter is None:
            index = None
        else:
            try:
                index = next(self._sampler_iter)
            except StopIteration:
                self._sampler_done = True
                return
        for _ in range(self._num_workers):
            worker = next(self._cycle)
            if self._active[worker]:
                self._pool.submit(worker, index)
                self._tasks.append(worker)
                return

    def __next__(self) -> Any:
        while self._tasks:
            worker = self._tasks.popleft()
            try:
                kind, payload = self._pool.receive(worker, self._timeout)
                if kind == "end":  # this worker's IterableDataset copy is spent
                    self._active[worker] = False
                self._dispatch()
            except DataLoaderError:  # a worker died or timed out: stop them all now, free every block
                self._tasks.clear()
                self._pool.close(wait=0)
                raise
            if kind == "end":
                continue
            if kind == "error":
                raise_from_worker(worker, payload)
            return payload
        if not self._persistent:
            self._pool.close()
        raise StopIteration
