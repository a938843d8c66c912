"""The registered norm kinds and their labels, importable without torch so that scripts and argument
parsers check a name in milliseconds.

Read from the registry's source (`NORMS` in asc/nn/norms.py) rather than written out again, so a new
norm is one entry there; tests/test_norms.py checks that this reading equals the imported registry.
"""

from __future__ import annotations

import ast
from pathlib import Path

_REGISTRY = Path(__file__).resolve().parent / "nn" / "norms.py"


def _read_registry() -> dict[str, str]:
    """name -> label of every entry of the `NORMS = {...}` dict literal."""
    for node in ast.parse(_REGISTRY.read_text(encoding="utf-8")).body:
        target = node.target if isinstance(node, ast.AnnAssign) else \
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if isinstance(target, ast.Name) and target.id == "NORMS" and isinstance(node.value, ast.Dict):
            out = {}
            for key, value in zip(node.value.keys, node.value.values):
                labels = [kw.value for kw in getattr(value, "keywords", []) if kw.arg == "label"]
                if not (isinstance(key, ast.Constant) and isinstance(key.value, str) and labels
                        and isinstance(labels[0], ast.Constant)):
                    break
                out[key.value] = labels[0].value
            else:
                return out
    raise RuntimeError(f"{_REGISTRY}: NORMS must be a dict literal of \"name\": NormSpec(..., label=\"...\") "
                       "entries; asc.norm_kinds reads it without importing torch")


#: kind -> one-line label, in the registry's order
NORM_LABELS: dict[str, str] = _read_registry()
#: the registered kinds, in the registry's order
NORM_KINDS: tuple[str, ...] = tuple(NORM_LABELS)
