"""Deterministic subsets that keep a dataset's mix (of devices, of classes), and the view that serves them."""

from __future__ import annotations

from collections.abc import Sequence


def stratified_indices(keys: Sequence, n: int | None) -> list[int]:
    """`n` indices spread evenly over the distinct keys (round robin over groups in first-seen order,
    each group in its own order), so a subset keeps the mix of devices and classes; all if n is None."""
    if n is None or n >= len(keys):
        return list(range(len(keys)))
    groups: dict = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    queues = [list(reversed(g)) for g in groups.values()]
    picked: list[int] = []
    while len(picked) < n:
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop())
    return sorted(picked)


class Subset:
    """Some items of a dataset (torch's Dataset protocol), keeping its `records` when it has them, so
    that loaders still see a feature cache (and use worker processes for it)."""

    def __init__(self, base, indices: Sequence[int]) -> None:
        self.base, self.indices = base, list(indices)
        if hasattr(base, "records"):
            self.records = [base.records[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.base[self.indices[i]]
