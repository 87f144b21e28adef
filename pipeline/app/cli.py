"""Command-line glue shared by the Hydra app: error reporting and resolvers (no Hydra import)."""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.contract.errors import BulkInferError

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def sample_path(name: str) -> str:
    """``${bulkinfer.sample:NAME}``: the path of a data file shipped with bulkinfer."""
    path = SAMPLES / name
    if not path.exists():
        available = ", ".join(sorted(p.name for p in SAMPLES.iterdir()))
        raise BulkInferError(f"no sample data set {name!r}; shipped: {available}")
    return str(path)


def report(error: BulkInferError) -> int:
    """Print a user error the way every bulkinfer command does; return its exit status."""
    print(f"bulkinfer: error: {error}", file=sys.stderr)
    return error.exit_code
