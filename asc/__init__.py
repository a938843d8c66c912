"""asc-l2bn: acoustic scene classification with L2-normalized batch normalization."""

__version__ = "0.1.0"
