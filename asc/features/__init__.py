"""Features: log-mel (+ deltas) extraction in torch (`logmel`), the sharded on-disk cache with its
manifest (`cache`), training-side readers (`dataset`) and the `asc extract` command (`cli`).

Kept import-free so `asc --help` (which imports `asc.features.cli`) stays fast; import the submodules.
"""
