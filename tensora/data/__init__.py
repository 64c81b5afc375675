"""Data loading: datasets, samplers, collation and the DataLoader (torch.utils.data's API).

    >>> import tensora
    >>> from tensora.data import DataLoader, TensorDataset
    >>> ds = TensorDataset(tensora.randn(100, 8), tensora.randint(0, 3, (100,)))
    >>> g = tensora.Generator().manual_seed(0)
    >>> x, y = next(iter(DataLoader(ds, batch_size=32, shuffle=True, generator=g)))
    >>> x.shape, y.shape
    (tensora.Size([32, 8]), tensora.Size([32]))

With num_workers > 0 the batches are built in worker processes and handed over
through shared memory; see DataLoader.
"""

from .collate import collate, default_collate, default_collate_fn_map, default_convert
from .dataset import (ChainDataset, ConcatDataset, Dataset, IterableDataset, Subset, TensorDataset,
                      random_split)
from .loader import DataLoader
from .sampler import (BatchSampler, RandomSampler, Sampler, SequentialSampler, SubsetRandomSampler,
                      WeightedRandomSampler)
from .workers import DataLoaderError, WorkerDiedError, WorkerInfo, get_worker_info

__all__ = ["Dataset", "IterableDataset", "TensorDataset", "Subset", "ConcatDataset", "ChainDataset",
           "random_split", "Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler",
           "WeightedRandomSampler", "BatchSampler", "collate", "default_collate", "default_collate_fn_map",
           "default_convert", "DataLoader", "get_worker_info", "WorkerInfo", "DataLoaderError",
           "WorkerDiedError"]
