#!/usr/bin/env python
"""The `refexit fine-tune --objective final` recipe in PyTorch eager, for comparison.

Same splits (refexit.data), same token ids (refexit's tokenizer, which matches HF's), the same
length-bucketed batches in the same order (refexit.train.finetune.length_batches with the same
seeds), the same hyperparameters: AdamW (torch.optim.AdamW; no decay on biases and LayerNorm
weights), linear warm-up and decay (transformers.get_linear_schedule_with_warmup), clipping at
global norm 1, dropout 0.1, BertForSequenceClassification with HF's classifier initialisation.
Dropout masks and the classifier's initial values differ (torch's RNG). Not a library dependency:
needs torch and transformers.

    python tools/finetune_torch.py MODEL_DIR --data rotten_tomatoes --epochs 3 --threads 1 --json out.json

Prints per-epoch train loss, dev accuracy, tokens/s (real tokens per second of training steps,
counted as refexit fine-tune counts them) and the final test accuracy.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import BertForSequenceClassification, get_linear_schedule_with_warmup

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import refexit  # noqa: E402
from refexit import data  # noqa: E402
from refexit.cli.train import limited  # noqa: E402
from refexit.train import finetune as FT  # noqa: E402


def tensors(enc: FT.Encoded, idx):
    ids, types, mask, y = enc.batch(idx)
    return (torch.from_numpy(ids), torch.from_numpy(types), torch.from_numpy(mask.astype(np.int64)),
            torch.from_numpy(y), int(mask.sum()))


@torch.no_grad()
def accuracy(model, enc: FT.Encoded, batch: int) -> float:
    model.eval()
    order = np.argsort(enc.lengths, kind="stable")
    pred = np.zeros(len(order), np.int64)
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        ids, types, mask, _, _ = tensors(enc, idx)
        pred[idx] = model(input_ids=ids, token_type_ids=types, attention_mask=mask).logits.argmax(-1).numpy()
    model.train()
    return float(np.mean(pred == enc.labels))


def main(argv=None) -> int:
    d = FT.FinetuneConfig()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--data", default="rotten_tomatoes")
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--batch", type=int, default=d.batch_size)
    ap.add_argument("--max-length", type=int, default=d.max_length)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--steps", type=int, help="at most N steps per epoch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    transformers.logging.set_verbosity_error()

    ds = limited(data.load_dataset(args.data), args.limit, args.seed)
    tok = refexit.load(args.model_dir).tokenizer
    max_len = min(args.max_length, tok.max_length)
    enc = {k: FT.encode(tok, s, max_len, False) for k, s in ds.splits().items()}
    model = BertForSequenceClassification.from_pretrained(
        str(args.model_dir), num_labels=ds.num_labels, attn_implementation="eager",
        hidden_dropout_prob=d.hidden_dropout, attention_probs_dropout_prob=d.attn_dropout).train()
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    rest = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": d.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=args.lr, eps=1e-8)
    n_batches = -(-len(enc["train"].lengths) // args.batch)
    per_epoch = min(n_batches, args.steps or n_batches)
    total = per_epoch * args.epochs
    sched = get_linear_schedule_with_warmup(opt, int(math.ceil(d.warmup_ratio * total)), total)
    log, t_all, tok_all, best, best_state = [], 0.0, 0, -1.0, None
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} thread(s); "
          f"{ds}; {per_epoch} steps x {args.epochs} epochs", file=sys.stderr)
    for epoch in range(1, args.epochs + 1):
        batches = FT.length_batches(enc["train"].lengths, args.batch, np.random.default_rng([args.seed, epoch]),
                                    d.bucket)[:per_epoch]
        t0, n_tok, loss_sum, n = time.monotonic(), 0, 0.0, 0
        for k, idx in enumerate(batches, start=1):
            ids, types, mask, y, real = tensors(enc["train"], idx)
            out = model(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=y)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), d.max_grad_norm)
            opt.step()
            sched.step()
            n_tok += real
            loss_sum += out.loss.item() * len(idx)
            n += len(idx)
            if k % 20 == 0 or k == len(batches):
                el = time.monotonic() - t0
                print(f"epoch {epoch} step {k}/{len(batches)} loss {loss_sum / n:.4f} {n_tok / el:,.0f} tokens/s",
                      file=sys.stderr, flush=True)
        secs = time.monotonic() - t0
        t_all, tok_all = t_all + secs, tok_all + n_tok
        dev = accuracy(model, enc["dev"], d.eval_batch)
        log.append({"epoch": epoch, "train_loss": loss_sum / n, "dev_accuracy": dev, "seconds": round(secs, 1),
                    "tokens_per_s": round(n_tok / secs, 1)})
        print(f"epoch {epoch}: train loss {loss_sum / n:.4f} dev accuracy {dev:.4f} {n_tok / secs:,.0f} tokens/s "
              f"{secs:.0f} s", flush=True)
        if dev > best:                   # as refexit: the best dev epoch's weights are the result
            best, best_state = dev, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    test = accuracy(model, enc["test"], d.eval_batch)
    res = {"torch": torch.__version__, "threads": args.threads, "data": args.data, "sizes": {k: len(e.lengths) for
           k, e in enc.items()}, "epochs": log, "test_accuracy": test, "train_seconds": round(t_all, 1),
           "tokens_per_s": round(tok_all / t_all, 1), "argv": sys.argv[1:]}
    print(f"test accuracy {test:.4f}; {t_all:.0f} s of training, {tok_all / t_all:,.0f} tokens/s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
