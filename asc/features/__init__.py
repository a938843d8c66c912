"""Features: log-mel (+ deltas) extraction in torch (`logmel`); the on-disk cache (`cache`: locate,
open, verify, manifest; `shards`: the .npy shard files and their checksums); `asc extract`'s run
(`extract`: plan and write, `compute`: the worker pool); training-side readers (`dataset`) and the
command's parser (`cli`).

Kept import-free so `asc --help` (which imports `asc.features.cli`) stays fast; import the submodules.
"""
