"""The norm kinds `asc.nn.make_norm` builds (paper Tables 3 and 5), importable without torch so that
scripts and argument parsers can check a name in milliseconds."""

NORM_KINDS: tuple[str, ...] = (
    "bn", "l2bn", "lnbn", "inbn", "pnbn", "ln", "in", "gn4", "gn8", "sn", "bcn", "bin", "none",
)
