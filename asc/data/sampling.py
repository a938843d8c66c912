"""Deterministic subsets that keep a dataset's mix (of devices, of classes)."""

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
