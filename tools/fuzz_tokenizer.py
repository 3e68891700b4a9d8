"""Longer fuzzing of the generated C tokenizer: AddressSanitizer + UBSan build, outputs compared
with the oracle refexit.tokenizers.wordpiece.Tokenizer.

    python tools/fuzz_tokenizer.py --seconds 600            # until the time is up
    python tools/fuzz_tokenizer.py --batches 50 --seed 7    # a fixed amount, reproducible

Each batch is a few thousand inputs: random bytes, random code points from every plane, text
from a curated alphabet (combining marks, Hangul, Greek sigma, CJK, specials, invalid UTF-8
pieces) and mutations of real data set texts (byte flips, insertions, deletions, splices, marks
and controls dropped in). Odd batches use the real all-MiniLM-L6-v2 vocabulary with the model's
settings; even batches a character vocabulary (every character of the batch, "##" + each) with
random do_lower_case / strip_accents / tokenize_chinese_chars, under which any difference in
cleaning, decomposition, mark ordering, lower-casing or accent stripping changes the ids. The driver program
(codegen.tokenizer_emit.driver_source) copies every input into a buffer of exactly its size, so
an over-read is a sanitizer report.

Any sanitizer report or mismatch stops the run; the batch's vocabulary, inputs and the first
mismatching records are kept in --out (default ./fuzz_tokenizer_failures) to reproduce with
`<driver> VOCAB INPUTS LOWER STRIP CJK`. Exit status 0 = nothing found, 1 = found something,
2 = no sanitizer runtime.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codegen import tokenizer_emit as te  # noqa: E402
from refexit.tokenizers.wordpiece import Tokenizer  # noqa: E402

SAN_FLAGS = ("-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
             "-fno-sanitize-recover=undefined")

PIECES = [b"a", b"A", b"z", b" ", b".", b",", b"'", b"#", b"##", b"[", b"]", b"[CLS]", b"[SEP]", b"[MASK]",
          b"[PAD]", b"[UNK]", b"[CL", b"S]", b"\x00", b"\x07", b"\t", b"\n", b"\r\n", b"\xc2\xa0",
          b"\xe2\x80\xa8", b"\xe3\x80\x80", b"\xe2\x80\x8b", b"\xef\xbb\xbf", b"\xc2\xad",
          b"\xce\xa3", b"\xce\x91", b"\xcf\x82", b"\xc4\xb0", b"\xcc\x81", b"\xcc\x80", b"\xcc\x96",
          b"\xcc\xa3", b"\xcd\x85", b"\xcd\x84", b"\xe0\xbd\xb3", b"\xf0\x9d\x85\xa5", b"\xf0\x9d\x85\xad",
          b"\xe3\x80\xae", b"\xe1\x84\x80", b"\xe1\x85\xa1", b"\xe1\x86\xa7", b"\xe1\x86\xa8", b"\xea\xb0\x80",
          b"\xe4\xb8\xad", b"\xef\xa4\x80", b"\xf0\xaf\xa0\x80", b"\xe0\xad\x87", b"\xe0\xac\xbe",
          b"\xf0\x9f\x98\x80", b"\xe2\x80\x8d", b"\xef\xb8\x8f", b"\xca\xb0", b"\xc2\xb7", b"\xe2\x80\x99",
          b"\xc3\x80", b"\xc3\xa9", b"\xc7\x95", b"\xe1\xb9\xa8", b"\xe2\x84\xaa", b"\xe2\x84\xa6",
          b"\xff", b"\xfe", b"\x80", b"\xbf", b"\xc0\xaf", b"\xc1", b"\xe0", b"\xe0\x80", b"\xe0\xa0",
          b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf0", b"\xf0\x90", b"\xf0\x90\x80", b"\xf4\x90\x80\x80",
          b"\xf5\x80\x80\x80", b"\xef\xbf\xbd", b"\xef\xbf\xbe"]
MARKS = [chr(c).encode() for c in range(0x300, 0x370)] + [b"\xcc\x96", b"\xf0\x9d\x85\xa5", b"\xe3\x80\xae"]


def load_corpus(limit: int = 20000) -> list[bytes]:
    try:
        from refexit import data
        out = []
        for name in ("rotten_tomatoes", "sms_spam", "bbc_news", "tweets"):
            ds = data.load_dataset(name)
            out += [t.encode("utf-8") for t in ds.train.texts[: limit // 4]]
        return out
    except Exception as e:                      # the data sets are optional here
        print(f"(no data set texts to mutate: {e})", file=sys.stderr)
        return [b"The quick brown fox jumps over the lazy dog."]


def mutate(rng: random.Random, b: bytes, corpus: list[bytes]) -> bytes:
    b = bytearray(b)
    for _ in range(rng.randrange(1, 8)):
        op = rng.randrange(6)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(i, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i:i] = rng.choice(PIECES)
        elif op == 2 and b:
            del b[i:i + rng.randrange(1, 8)]
        elif op == 3:
            other = rng.choice(corpus)
            j = rng.randrange(len(other) + 1)
            b[i:i] = other[j:j + rng.randrange(1, 64)]
        elif op == 4:
            b[i:i] = b"".join(rng.choice(MARKS) for _ in range(rng.randrange(1, 60)))
        else:
            b[i:i] = bytes([rng.randrange(256)])
    return bytes(b)


def random_input(rng: random.Random, corpus: list[bytes]) -> bytes:
    k = rng.random()
    if k < 0.15:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(80)))
    if k < 0.3:
        return "".join(chr(rng.choice([rng.randrange(0x110000), rng.randrange(0x300, 0x370),
                                       rng.randrange(0x20, 0x7F), rng.randrange(0xAC00, 0xD7A4)]))
                       for _ in range(rng.randrange(40))).encode("utf-8", "surrogatepass")
    if k < 0.6:
        return b"".join(rng.choice(PIECES) for _ in range(rng.randrange(60)))
    if k < 0.97:
        return mutate(rng, rng.choice(corpus), corpus)
    base = rng.choice([b"a", b"\xce\x91\xce\xa3", b"", b"\xc4\xb0", b"\xe1\x84\x80\xe1\x85\xa1"])
    fill = rng.choice([b"\xcc\x81", b"\xcc\x96\xcc\x81", b"'", b".", b"a,", b"[", b"[CLS]", b"x", b"\xff"])
    return base + fill * rng.randrange(1000, 30000) + rng.choice([b"", b"a", b"\xce\xa3"])


def make_batch(rng: random.Random, corpus: list[bytes], n: int):
    records = []
    for _ in range(n):
        t = random_input(rng, corpus)
        kind = rng.choice([0, 1, 2])
        pair = random_input(rng, corpus) if kind == 2 else b""
        ml = rng.choice([2, 3, 5, 16, 128, 512, 2**31 - 1])
        cap = rng.choice([0, 3, 64, 600, 1 << 16])
        records.append((kind, t, pair, ml, cap))
    return records


def run_batch(exe: Path, work: Path, vocab: list[str] | bytes, settings, records, py: Tokenizer):
    vocab_bytes = vocab if isinstance(vocab, bytes) else "\n".join(vocab).encode("utf-8")
    (work / "vocab.txt").write_bytes(vocab_bytes)
    (work / "inputs.bin").write_bytes(b"".join(te.driver_record(*r) for r in records))
    lower, strip, cjk = settings
    args = [str(exe), str(work / "vocab.txt"), str(work / "inputs.bin"), str(int(lower)),
            str(-1 if strip is None else int(strip)), str(int(cjk))]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:halt_on_error=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=3600)
    problems = []
    if r.returncode != 0 or "Sanitizer" in r.stderr or "runtime error" in r.stderr:
        problems.append(f"driver exit {r.returncode}:\n{r.stderr[-6000:]}")
        return problems, args
    lines = r.stdout.splitlines()
    if len(lines) != len(records):
        problems.append(f"{len(lines)} output lines for {len(records)} records")
        return problems, args
    for i, (rec, line) in enumerate(zip(records, lines)):
        want = te.oracle_driver_line(py, *rec)
        if want is not None and line != want:
            problems.append(f"record {i}: kind={rec[0]} max_length={rec[3]} capacity={rec[4]}\n"
                            f"  text={rec[1][:300]!r}\n  pair={rec[2][:300]!r}\n  C ={line[:400]}\n"
                            f"  py={want[:400]}")
    return problems, args


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=300, help="stop after this long (default 300)")
    ap.add_argument("--batches", type=int, default=0, help="stop after this many batches (0: use --seconds)")
    ap.add_argument("--batch-size", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--cc", default=os.environ.get("CC") or ("clang" if shutil.which("clang") else "cc"))
    ap.add_argument("--model-dir", default=None, help="HF folder with vocab.txt (default: the cached all-MiniLM-L6-v2)")
    ap.add_argument("--out", default="fuzz_tokenizer_failures")
    args = ap.parse_args(argv)

    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="refexit-fuzz-"))
    try:
        exe = te.build_driver(work, "rxtok", cc=args.cc, flags=SAN_FLAGS)
    except RuntimeError as e:
        print(f"cannot build with sanitizers ({args.cc}): {e}", file=sys.stderr)
        return 2
    model_dir = args.model_dir
    if model_dir is None:
        from refexit import data
        model_dir = data.model_dir()
    real = Tokenizer.from_dir(model_dir)
    real_vocab = (Path(model_dir) / "vocab.txt").read_bytes()
    real_settings = (real.do_lower_case, real.strip_accents, real.tokenize_chinese_chars)
    corpus = load_corpus()
    print(f"seed {seed}; driver {exe} ({args.cc}); batches of {args.batch_size}", flush=True)
    start, batch, total = time.time(), 0, 0
    while (batch < args.batches) if args.batches else (time.time() - start < args.seconds):
        records = make_batch(rng, corpus, args.batch_size)
        if batch % 2:
            py, vocab, settings = real, real_vocab, real_settings
        else:
            text = "".join(r[1].decode("utf-8", "replace") + r[2].decode("utf-8", "replace") for r in records)
            vocab = te.char_vocabulary(text)
            settings = (rng.random() < 0.5, rng.choice([None, True, False]), rng.random() < 0.5)
            py = Tokenizer(vocab, do_lower_case=settings[0], strip_accents=settings[1],
                           tokenize_chinese_chars=settings[2])
        problems, cmd = run_batch(exe, work, vocab, settings, records, py)
        batch += 1
        total += len(records)
        if problems:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(work / "vocab.txt", out / "vocab.txt")
            shutil.copy(work / "inputs.bin", out / "inputs.bin")
            shutil.copy(exe, out / exe.name)
            (out / "report.txt").write_text(f"seed {seed} batch {batch}\n{' '.join(cmd)}\n\n" + "\n\n".join(problems[:20]))
            print(f"FOUND after {total} inputs ({len(problems)} problems); kept in {out}/:\n" + "\n\n".join(problems[:3]))
            return 1
        print(f"batch {batch}: {total} inputs, {time.time() - start:.0f} s, "
              f"{'real vocab' if batch % 2 == 0 else 'char vocab'} ok", flush=True)
    print(f"no sanitizer report and no mismatch in {total} inputs ({batch} batches, seed {seed})")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
