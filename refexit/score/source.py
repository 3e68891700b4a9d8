"""SOURCE of `refexit score`: a compiled folder (`refexit compile` output) is opened as it is; a
model folder (an HF BERT folder, with exits.safetensors when present) is compiled on the fly into
$REFEXIT_CACHE/score/<key>, where <key> hashes the folder's files (names, sizes, mtimes), the exits
and the policy: the next run with the same model and policy reopens it (and codegen's build cache
already holds the library)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from refexit.errors import InputError, RefexitError

MANIFEST_SUFFIX = ".manifest.json"          # codegen.binding.MANIFEST_SUFFIX (not imported: codegen is lazy)


def is_compiled(path: Path) -> bool:
    return path.is_dir() and any(path.glob(f"*{MANIFEST_SUFFIX}"))


def _stat_key(h, path: Path) -> None:
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for f in files:
        st = f.stat()
        h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())


def cache_folder(model_dir: Path, exits: Path | None, policy) -> Path:
    """Where a model folder compiled with `policy` is cached."""
    import refexit
    h = hashlib.sha256(f"{refexit.__version__}\0{model_dir.resolve()}\0{policy!r}\0".encode())
    _stat_key(h, model_dir)
    if exits is not None:
        h.update(f"{Path(exits).resolve()}\0".encode())
        _stat_key(h, Path(exits))
    from refexit.data import cache_root
    return cache_root() / "score" / h.hexdigest()[:24]


def open_source(source, policy=None, exits=None, max_batch: int = 256):
    """SOURCE -> (compiled folder, opened codegen.CompiledModel) with `policy` in force (None: the
    compiled folder's own policy; a model folder compiled without a policy runs the full model)."""
    import codegen
    src = Path(source)
    if is_compiled(src):
        if exits is not None:
            raise InputError(f"--exits is for a model folder; {src} is compiled (its exits are built in)")
        cm = codegen.load_compiled(src)
        if policy is not None:
            cm.set_policy(policy)
        return src, cm
    if not (src / "config.json").is_file():
        raise InputError(f"{src}: neither a compiled folder (no *{MANIFEST_SUFFIX}) nor a model folder "
                         f"(no config.json)")
    folder = cache_folder(src, exits, policy)
    if is_compiled(folder):
        try:
            return folder, codegen.load_compiled(folder)
        except (RefexitError, OSError, codegen.BuildError):   # a stale or broken entry: compile again
            pass
    from refexit.model import load
    model = load(src, exits=exits)
    cm = codegen.compile_model(model, policy, folder, prefix="score", max_batch=max_batch)
    return folder, cm
