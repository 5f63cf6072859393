"""An in-memory column cache for lerobot's dataset reader, used while training reference policies.

lerobot's ``DatasetReader._query_hf_dataset`` gathers each delta-timestamp window (16 action rows per
sample here) with an Arrow ``select``, and every select deep-copies the dataset's feature schema.
For our small state-only datasets that copy is about 75% of a training step on this CPU (measured:
7.9 ms per sample, 0.34 s of data time against 0.08 s of update per batch of 64). The cache reads each
numeric column once into a tensor and answers the same queries by indexing it; the result is the same
``torch.stack`` of the same rows (checked in tests/training/test_reference.py). Image and video keys
go through lerobot's own path unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def _cached_query(original):
    def query(self, query_indices: dict[str, list[int]]) -> dict:
        cache = self.__dict__.setdefault("_policy_steer_columns", {})
        rest: dict[str, list[int]] = {}
        result: dict = {}
        for key, q_idx in query_indices.items():
            if key in self._meta.video_keys or key in self._meta.camera_keys:
                rest[key] = q_idx
                continue
            if key not in cache:
                rows = list(self.hf_dataset[key])  # once per column: the formatted rows, as lerobot gets them
                cache[key] = torch.stack(rows) if rows and isinstance(rows[0], torch.Tensor) else None
            if cache[key] is None:
                rest[key] = q_idx
                continue
            rel = q_idx if self._absolute_to_relative_idx is None else [self._absolute_to_relative_idx[i] for i in q_idx]
            result[key] = cache[key][torch.as_tensor(rel, dtype=torch.long)]
        if rest:
            result.update(original(self, rest))
        return result

    return query


@contextlib.contextmanager
def cached_columns() -> Iterator[None]:
    """While active, lerobot's dataset reader answers numeric window queries from memory."""
    from lerobot.datasets.dataset_reader import DatasetReader

    original = DatasetReader._query_hf_dataset
    DatasetReader._query_hf_dataset = _cached_query(original)
    try:
        yield
    finally:
        DatasetReader._query_hf_dataset = original
