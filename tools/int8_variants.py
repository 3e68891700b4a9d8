"""int8 variants on a real data set, in the oracle's emulation (docs/codegen.md, "What limits Tweets"):
label / exit agreement with fp32 at the fp32 dev-picked operating points of `refexit evaluate --sweep`.
A research tool: it patches the emulation (nn.LINEAR, Model._layers); nothing here ships.

    python tools/int8_variants.py ALPHA WHICH [N] [DATA]        # from the project root
    ALPHA 0: the shipped int8; > 0: calibrated SmoothQuant with that alpha on WHICH (o,up,down:
        o's scales folded into v, up's and down's applied as the activations are quantized)
    N: first N test texts (default 1500); DATA: a built-in data set (default tweets), exits from
        out/exits-DATA-mean_linear-deebert-seed0 with its evaluate-DATA.json
    MODE=wonly: int8 weights, exact activations; MODE=aonly: int8 activations, exact weights
    GPTQ=1: the o, up, down weights rounded by GPTQ (Hessian from the calibration inputs)
Calibration: the first 512 training texts of DATA, fp32 activations."""
import json, sys, time
from pathlib import Path
import numpy as np
import refexit
from refexit import nn, data
from refexit.train import evaluate as E, features as F
from refexit.train.evaluate import LayerOutputs

alpha = float(sys.argv[1]); which = sys.argv[2].split(",")   # e.g. o,up,down
N = int(sys.argv[3]) if len(sys.argv) > 3 else 1500
ncal = 512
ds_name = sys.argv[4] if len(sys.argv) > 4 else "tweets"
exdir = Path(f"out/exits-{ds_name}-mean_linear-deebert-seed0")
report = json.load(open(exdir / f"evaluate-{ds_name}.json"))
model = refexit.load(data.model_dir("all-MiniLM-L6-v2"), exits=exdir / "exits.safetensors")
ds = data.load_dataset(ds_name)
texts = ds.test.texts[:N]; y = np.asarray(ds.test.labels[:N])
cal = ds.train.texts[:ncal]
L = model.num_layers
max_length = report.get("max_length", 128)

# --- calibration: per-channel max |x| at the inputs of o, up, down (fp32 model)
names = {"o": "attn.o.w", "up": "ffn.up.w", "down": "ffn.down.w"}
ids = {id(model._layers[i][names[n]]): (i, n) for i in range(L) for n in names}
amax = {}
base_linear = nn.LINEAR["fp32"]
def rec(x, w, b):
    k = ids.get(id(w))
    if k is not None:
        m = np.abs(x).reshape(-1, x.shape[-1]).max(0)
        amax[k] = np.maximum(amax.get(k, 0), m)
        if GPTQ:
            x2 = x.reshape(-1, x.shape[-1]).astype(np.float64)
            HS[k] = HS.get(k, 0) + x2.T @ x2
    return base_linear(x, w, b)
import os
GPTQ = os.environ.get("GPTQ", "") == "1"
HS = {}
nn.LINEAR["fp32"] = rec
t0 = time.time()
F.extract(model, cal, max_length, use_cache=False, progress=False)
nn.LINEAR["fp32"] = base_linear
print(f"calibrated on {ncal} train texts in {time.time()-t0:.0f}s", file=sys.stderr)

orig_int8 = nn.linear_int8

from typing import NamedTuple
class Smooth(NamedTuple):
    qw: object        # QuantWeight of W * s
    inv_s: np.ndarray # [in] float32
def lin8(x, w, b):
    if isinstance(w, Smooth):
        return orig_int8((x * w.inv_s).astype(x.dtype), w.qw, b)
    return orig_int8(x, w, b)
MODE = os.environ.get("MODE", "")
def deq(qw):
    return qw.q.astype(np.float32) * qw.scale[:, None]
def lin8_mode(x, w, b):
    if isinstance(w, nn.Bf16Weight) or MODE == "":
        return lin8(x, w, b)
    inv = None
    if isinstance(w, Smooth):
        inv, w = w.inv_s, w.qw
        x = (x * inv).astype(x.dtype)
    if MODE == "wonly":       # int8 weights, exact activations
        return x @ deq(w).T + b
    if MODE == "aonly":       # quantized activations, the weights as quantized... exact fp32 weights
        u, zp, sc = nn.quantize_uint8(x)
        xd = (u.astype(np.float32) - zp[..., None]) * sc[..., None]
        W = FP32W[id(w)]
        if inv is not None:
            W = W * (1 / inv)[None, :]
        return xd @ W.T + b
nn.LINEAR["int8"] = lin8_mode
FP32W = {}

m8 = model.with_precision("int8")
if alpha > 0:
    for i in range(L):
        P = model._layers[i]; Q = m8._layers[i]
        for n in which:
            wname = names[n]
            W = P[wname]                                            # [out, in]
            s = (amax[(i, n)] ** alpha / np.maximum(np.abs(W).max(0), 1e-8) ** (1 - alpha)).astype(np.float32)
            s = np.maximum(s, 1e-5)
            if n == "o":     # fold 1/s into v (bf16), s into o's columns
                Q["attn.v.w"] = nn.Bf16Weight(nn.round_bf16(P["attn.v.w"] / s[:, None]))
                Q["attn.v.b"] = (P["attn.v.b"] / s).astype(np.float32)
                Q[wname] = nn.QuantWeight(*nn.quantize_int8((W * s[None, :]).astype(np.float32)))
            else:
                Q[wname] = Smooth(nn.QuantWeight(*nn.quantize_int8((W * s[None, :]).astype(np.float32))),
                                  (1 / s).astype(np.float32))

for i in range(L):
    for n in names.values():
        q = m8._layers[i][n]
        q = q.qw if isinstance(q, Smooth) else q
        FP32W[id(q)] = model._layers[i][n]
def gptq(W, H, damp=0.01):
    W = W.astype(np.float64).copy()                    # [out, in]
    scale = (np.abs(W).max(1) / 127).astype(np.float32)  # per output row, fixed from the original
    sc = scale.astype(np.float64)
    H = H.copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * np.mean(np.diag(H)) * np.eye(len(H))
    Hinv = np.linalg.cholesky(np.linalg.inv(H)).T       # upper
    Q = np.zeros(W.shape, np.int8)
    for i in range(W.shape[1]):
        w = W[:, i]
        q = np.clip(np.rint(w / sc), -127, 127)
        Q[:, i] = q
        err = (w - q * sc) / Hinv[i, i]
        W[:, i + 1:] -= err[:, None] * Hinv[i, i + 1:][None, :]
    return nn.QuantWeight(Q, scale)
if GPTQ:
    t0 = time.time()
    for i in range(L):
        for n in ("o", "up", "down"):
            q = m8._layers[i][names[n]]
            if isinstance(q, Smooth) or (alpha > 0 and n in which):   # smoothed: W*s with H of x/s
                W = model._layers[i][names[n]]
                s_ = (amax[(i, n)] ** alpha / np.maximum(np.abs(W).max(0), 1e-8) ** (1 - alpha)).astype(np.float32)
                s_ = np.maximum(s_, 1e-5).astype(np.float64)
                g = gptq((W * s_[None, :].astype(np.float32)).astype(np.float32), HS[(i, n)] / np.outer(s_, s_))
                m8._layers[i][names[n]] = Smooth(g, (1 / s_).astype(np.float32)) if isinstance(q, Smooth) else g
            else:
                m8._layers[i][names[n]] = gptq(model._layers[i][names[n]], HS[(i, n)])
    print(f"gptq in {time.time()-t0:.0f}s", file=sys.stderr)
points = E.operating_points(report)
t0 = time.time()
runs = {}
for name, mp in (("fp32", model), ("int8", m8)):
    out = LayerOutputs(mp, F.extract(mp, texts, max_length, use_cache=(name == "fp32"), progress=False))
    runs[name] = {k: E.simulate(mp, pol, out) for k, pol in points.items()}
print(f"ran {N} texts in {time.time()-t0:.0f}s", file=sys.stderr)
rows = []
for k in points:
    a = E.agreement(runs["fp32"][k], runs["int8"][k], y)
    rows.append((k, a))
    print(f"{k:14s} labels {a['label_agreement']*100:6.2f}%  exits {a['exit_agreement']*100:6.2f}%  dacc {a['accuracy_delta']*100:+.2f}  layers {a['mean_layers']:.2f}")
print("lowest label agreement %.2f%%  max |dacc| %.2f" % (min(a['label_agreement'] for _, a in rows)*100, max(abs(a['accuracy_delta']) for _, a in rows)*100))
