"""Fetchers: turn one sampler step into one batch, in the main process or in a worker.

Both the single-process loader and each worker process call these, so a batch is
built the same way wherever it is built (that is why num_workers does not change
what a loader yields).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator


class MapFetcher:
    """Map-style datasets: a list of indices -> collate([dataset[i] ...]), or one index -> convert(dataset[i])."""

    def __init__(self, dataset: Any, auto_collation: bool, collate_fn: Callable[[Any], Any]) -> None:
        self.dataset = dataset
        self.auto_collation = auto_collation
        self.collate_fn = collate_fn
        getitems = getattr(dataset, "__getitems__", None)
        self._getitems = getitems if callable(getitems) else None

    def fetch(self, index: Any) -> Any:
        if not self.auto_collation:
            return self.collate_fn(self.dataset[index])
        if self._getitems is not None:
            return self.collate_fn(self._getitems(index))
        return self.collate_fn([self.dataset[i] for i in index])


class IterableFetcher:
    """Iterable datasets: the next `batch_size` items of the stream (or the next item when not batching).

    `fetch` raises StopIteration once the stream is spent; a final short batch is
    kept unless drop_last.
    """

    def __init__(self, dataset: Any, auto_collation: bool, collate_fn: Callable[[Any], Any],
                 batch_size: int | None, drop_last: bool) -> None:
        self.iterator: Iterator[Any] = iter(dataset)
        self.auto_collation = auto_collation
        self.collate_fn = collate_fn
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.ended = False

    def fetch(self, index: Any = None) -> Any:
        if self.ended:
            raise StopIteration
        if not self.auto_collation:
            return self.collate_fn(next(self.iterator))
        data = []
        for item in self.iterator:
            data.append(item)
            if len(data) == self.batch_size:
                break
        else:
            self.ended = True
        if not data or (self.drop_last and len(data) < self.batch_size):
            self.ended = True
            raise StopIteration
        return self.collate_fn(data)
