"""Batch scoring (`refexit score`): table files in, one output row per input row out, through the
compiled model (codegen, imported lazily).

    source.open_source   SOURCE (compiled folder, or model folder compiled on the fly, cached)
    handles              C handles over one shared mapping of the weights; tokenize + classify in C
    rows                 input rows -> output records (ids, errors in place)
    chunks               OUTPUT.parts/: run.json + committed chunks (fsync + rename), resume
    output               the final JSON lines / CSV / Parquet file and the errors file
    engine               the local engine: a thread pool, one handle per worker
    ray_engine           the Ray Data engine (optional `ray`), map_batches_fn for Ray users
"""
from __future__ import annotations


def map_batches_fn(compiled_dir, **kwargs):
    """A callable class for Ray Data's `map_batches` that scores a text column with the compiled
    model in `compiled_dir` (see ray_engine.map_batches_fn)."""
    from .ray_engine import map_batches_fn as fn
    return fn(compiled_dir, **kwargs)


__all__ = ["map_batches_fn"]
