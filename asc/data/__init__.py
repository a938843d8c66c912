"""Datasets: the TAU Urban Acoustic Scenes 2020 Mobile reader (`tau2020`), the one audio loader every
stage uses (`audio`), a synthetic set in the same layout (`synth`), the md5-verified download
(`download`), folder checks (`check`) and CIFAR-100 (`cifar`).

Kept import-free so `asc --help` (which imports `asc.data.cli`) stays fast; import the submodules.
"""
