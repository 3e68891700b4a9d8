"""Fuzzing of the generated C byte-level BPE tokenizer (templates/tokenizer_bpe.c.j2): AddressSanitizer
+ UBSan build, outputs compared with the oracle refexit.tokenizers.TokenizerJson.

    python tools/fuzz_tokenizer_bpe.py --seconds 600
    python tools/fuzz_tokenizer_bpe.py --batches 20 --seed 7

Inputs as tools/fuzz_tokenizer.py makes them (random bytes and code points, curated pieces,
invalid UTF-8, mutated data set texts) plus byte-level pieces (contractions, runs of spaces,
<s> </s> <mask> inside text). Each batch uses a variant of a golden RoBERTa tokenizer
(tests/golden/tokenizers/roberta*): a random subset of the merges, random add_prefix_space,
lstrip / rstrip on the added tokens, some byte tokens removed with an <unk> (fused or not), so
unknown bytes, merge orders and prefix spaces are all exercised. Some records open mutated packed
files instead (only "no crash" is checked for those).

Any sanitizer report or mismatch stops the run; the packed file, inputs and the report are kept
in --out (default ./fuzz_tokenizer_bpe_failures). Exit status 0 = nothing found, 1 = found
something, 2 = no sanitizer runtime.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from codegen import tokenizer_emit as te  # noqa: E402
from fuzz_tokenizer import SAN_FLAGS, load_corpus, random_input  # noqa: E402
from refexit.tokenizers import TokenizerJson  # noqa: E402

GOLDEN = ROOT / "tests" / "golden" / "tokenizers"
BL_PIECES = [b"'s", b"'t", b"'re", b"'ve", b"'m", b"'ll", b"'d", b"'", b"''", b" ", b"  ", b"   ", b"\t", b"\n",
             b"\xc2\xa0", b"<s>", b"</s>", b"<mask>", b" <mask> ", b"<pad>", b"<unk>", b"<ma", b"sk>", b"1",
             b"12", b"\xd9\xa3", b"x", b"the", b" the", b"!", b"?!", b"\xf0\x9f\x98\x80", b"\xe4\xb8\xad"]


def variant(rng: random.Random, spec: dict) -> dict:
    """A random variant of a RoBERTa tokenizer.json spec (still one the C tokenizer implements)."""
    spec = json.loads(json.dumps(spec))
    model = spec["model"]
    if rng.random() < 0.5:
        keep = rng.random()
        model["merges"] = [m for m in model["merges"] if rng.random() < keep]
    if rng.random() < 0.3:                      # drop some byte tokens: unknown bytes
        byte_tokens = [t for t in model["vocab"] if len(t) == 1]
        gone = set(rng.sample(byte_tokens, rng.randrange(1, 40)))
        model["vocab"] = {t: i for t, i in model["vocab"].items() if t not in gone}
        model["merges"] = [m for m in model["merges"]
                           if (m if isinstance(m, list) else m.split(" "))[0] not in gone
                           and (m if isinstance(m, list) else m.split(" "))[1] not in gone]
        model["merges"] = [m for m in model["merges"]
                           if "".join(m if isinstance(m, list) else m.split(" ")) in model["vocab"]]
        if rng.random() < 0.7:
            model["unk_token"] = "<unk>"
            model["fuse_unk"] = rng.random() < 0.5
    prefix = rng.random() < 0.5
    spec["pre_tokenizer"]["add_prefix_space"] = prefix
    spec["post_processor"]["add_prefix_space"] = prefix
    for a in spec["added_tokens"]:
        a["lstrip"], a["rstrip"] = rng.random() < 0.3, rng.random() < 0.3
    return spec


def bl_input(rng: random.Random, corpus: list[bytes]) -> bytes:
    if rng.random() < 0.4:
        return b"".join(rng.choice(BL_PIECES) for _ in range(rng.randrange(40)))
    return random_input(rng, corpus)


def main(argv=None, kind: str = "bpe") -> int:
    """The fuzzing loop; kind "bpe" (this tool) or "unigram" (tools/fuzz_tokenizer_unigram.py, which
    passes its own variant and input makers)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--batches", type=int, default=0, help="stop after this many batches (0: use --seconds)")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--cc", default=os.environ.get("CC") or ("clang" if shutil.which("clang") else "cc"))
    ap.add_argument("--out", default=f"fuzz_tokenizer_{kind}_failures")
    args = ap.parse_args(argv)
    k = KINDS[kind]
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix=f"refexit-fuzz{kind}-"))
    try:
        exe = k["driver"](work, cc=args.cc, flags=SAN_FLAGS)
    except RuntimeError as e:
        print(f"cannot build with sanitizers ({args.cc}): {e}", file=sys.stderr)
        return 2
    bases = [json.loads((GOLDEN / b / "tokenizer.json").read_text(encoding="utf-8")) for b in k["bases"]]
    corpus = load_corpus()
    print(f"seed {seed}; driver {exe} ({args.cc}); batches of {args.batch_size}", flush=True)
    start, batch, total = time.time(), 0, 0
    while (batch < args.batches) if args.batches else (time.time() - start < args.seconds):
        spec = k["variant"](rng, rng.choice(bases))
        py = TokenizerJson(spec, max_length=2**31 - 1)
        packed = k["pack"](py)
        records = []
        for _ in range(args.batch_size):
            kind = rng.choice([0, 1, 2, 1, 2, 3] if rng.random() < 0.05 else [0, 1, 2])
            if kind == 3:
                b = bytearray(packed[: rng.randrange(len(packed) + 1)] if rng.random() < 0.3 else packed)
                for _ in range(rng.randrange(1, 6)):
                    if b:
                        b[rng.randrange(len(b))] = rng.randrange(256)
                records.append((3, bytes(b), b"", 0, 0))
                continue
            pair = k["input"](rng, corpus) if kind == 2 else b""
            records.append((kind, k["input"](rng, corpus), pair, rng.choice([2, 3, 4, 5, 16, 128, 512, 2**31 - 1]),
                            rng.choice([0, 3, 64, 600, 1 << 16])))
        (work / "packed.bin").write_bytes(packed)
        (work / "inputs.bin").write_bytes(b"".join(te.driver_record(*r) for r in records))
        cmd = [str(exe), str(work / "packed.bin"), str(work / "inputs.bin")]
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:halt_on_error=1",
                   UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
        problems = []
        if r.returncode != 0 or "Sanitizer" in r.stderr or "runtime error" in r.stderr:
            problems.append(f"driver exit {r.returncode}:\n{r.stderr[-6000:]}")
        else:
            lines = r.stdout.splitlines()
            if len(lines) != len(records):
                problems.append(f"{len(lines)} output lines for {len(records)} records")
            for i, (rec, line) in enumerate(zip(records, lines)):
                want = te.oracle_bpe_line(py, *rec)
                if want is not None and line != want:
                    problems.append(f"record {i}: kind={rec[0]} max_length={rec[3]} capacity={rec[4]}\n"
                                    f"  text={rec[1][:300]!r}\n  pair={rec[2][:300]!r}\n  C ={line[:400]}\n"
                                    f"  py={want[:400]}")
        batch += 1
        total += len(records)
        if problems:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            for name in ("packed.bin", "inputs.bin"):
                shutil.copy(work / name, out / name)
            (out / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
            (out / "report.txt").write_text(f"seed {seed} batch {batch}\n{' '.join(cmd)}\n\n" + "\n\n".join(problems[:20]))
            print(f"FOUND after {total} inputs ({len(problems)} problems); kept in {out}/:\n" + "\n\n".join(problems[:3]))
            return 1
        print(f"batch {batch}: {total} inputs, {time.time() - start:.0f} s ok", flush=True)
    print(f"no sanitizer report and no mismatch in {total} inputs ({batch} batches, seed {seed})")
    shutil.rmtree(work, ignore_errors=True)
    return 0


KINDS = {"bpe": dict(driver=te.build_bpe_driver, bases=("roberta", "roberta_prefix"), variant=variant,
                    pack=te.pack_bpe, input=bl_input)}


if __name__ == "__main__":
    sys.exit(main())
