"""Emission: Plan -> `<prefix>.h` and `<prefix>.c` through the jinja2 templates in templates/.

Every exported symbol starts with the prefix; each file starts with a provenance comment (tool
version, model hash, configuration, policy, options); floats are printed with %.9g (float32) or
%.17g (double), which round-trip exactly, and INFINITY/NAN by name. The output is a pure function
of the Plan (no dates, no paths beyond the model source), so the build cache can key on it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import refexit
from refexit import files

from . import pack
from .templating import c_comment, c_double, c_float, c_string, environment, templates_root  # noqa: F401
from .text import text_source                     # the tokenizer + text API, same translation unit

CODEGEN_FORMAT = 4     # bump when the generated C or the binding contract changes

# (name, code, message, Python exception: "checkpoint" | "input" | "memory")
ERRORS = [
    ("OK", 0, "ok", None),
    ("ERR_ARG", 1, "bad argument (a NULL pointer, a negative count, or a value this policy does not accept)", "input"),
    ("ERR_IO", 2, "cannot open or read the weights file", "checkpoint"),
    ("ERR_TRUNCATED", 3, "the weights file is truncated (its size differs from the size in its header)", "checkpoint"),
    ("ERR_MAGIC", 4, "not a refexit weights file (bad magic)", "checkpoint"),
    ("ERR_VERSION", 5, "unsupported weights file format version (or a big-endian host)", "checkpoint"),
    ("ERR_MODEL", 6, "the weights file is for another model (model hash or dimensions differ from the compiled code)", "checkpoint"),
    ("ERR_CHECKSUM", 7, "the weights file is corrupted (checksum mismatch)", "checkpoint"),
    ("ERR_NOMEM", 8, "out of memory", "memory"),
    ("ERR_TOO_LONG", 9, "a sequence is longer than the compiled maximum length", "input"),
    ("ERR_TOKEN", 10, "a token id is outside the vocabulary", "input"),
    ("ERR_TYPE", 11, "a token type id is outside [0, type_vocab_size)", "input"),
    ("ERR_EMPTY", 12, "a sequence has no tokens", "input"),
    ("ERR_NAN", 13, "a threshold is NaN", "input"),
    ("ERR_ISA", 14, "this library was built for an instruction set the CPU lacks (AVX2 or AVX-512); "
                    "rebuild it with isa=\"scalar\" or for this CPU", "isa"),
    ("ERR_CAPACITY", 15, "the output buffer is too small (*n_tokens holds the size needed)", "input"),
    ("ERR_VOCAB", 16, "the weights file holds no usable vocabulary or tokenizer tables (the text functions need "
                      "them; a model whose tokenizer has no C version takes token ids)", "checkpoint"),
    ("ERR_PADDING", 17, "the attention mask is not right padding (nonzero for the tokens, then zero)", "input"),
    ("ERR_PRECISION", 18, "the weights file is of another precision (fp32 / bf16 / int8) than this library was "
                          "compiled for", "checkpoint"),
]

POLICY_RULES = {
    "entropy": "Exit when H(softmax(z_i)) < S_i (strict), in nats.",
    "norm_entropy": "Exit when H(softmax(z_i)) / ln C {op} speed_i ({how}).",
    "max_prob": "Exit when max softmax(z_i / T_i) >= thr_i (inclusive).",
    "learned": "Exit when u_i = sigmoid(w . feat_i + b) < thr_i (strict).",
    "ponder": "Exit when sum_(j<=i) lambda_j prod_(k<j) (1 - lambda_k) > q_i (strict).",
    "patience": "Counter reset to 0 when layer i disagrees with layer i-1, else +1; exit when it "
                "equals t (t = 0: run the full model).",
    "window": "Exit when the prediction has been the same for N consecutive layers (this one included).",
    "static": "Exit at layer k.",
    "de3": "Exit when EDR_i = (lam + 1) / (lam / DR_i + 1 / (H_i / ln C)) < thr_i (strict), DR_i the "
           "prototype distance ratio.",
    "edgebert": "After layer 1: exit when H(softmax(z_1)) < S_1 (strict, nats); else predict the exit "
                "layer from the exit table's row nearest to that entropy and exit there{between}.",
    "dact": "DACT: a_i = p_(i-1) softmax(z_i) + (1 - p_(i-1)) a_(i-1), p_i = p_(i-1) (1 - sigmoid(w_i . feat_i + "
            "b_i)); exit when a_i[top1] (1 - p_i)^d - a_i[top2] - d p_i > 0 (strict), d = L - i; answer ln a_i.",
    "ceebert": "Exit when max softmax(z_i) >= alpha_i (inclusive), alpha_i chosen between calls by exit i's "
               "UCB bandit over the arms.",
    "gpf": "Exit when H(softmax(z_i)) < S_i (strict, nats), z_i the Global Past-Future combination "
           "2 lambda past + (2 - 2 lambda) future of the past layers' pooled [CLS] (or token means: see "
           "exits above) and imitated future ones.",
    "smartbert": "Before layer i: skip it when the gate sigmoid(g_i(x)) >= GATE_THRESHOLD (inclusive); after a "
                 "layer that ran, exit when H(softmax(z_i)) < S_i (strict, nats).",
}


def c_lvalue(name: str) -> str:
    """Canonical tensor name -> the Weights field it is mapped to."""
    simple = {"emb.word": "w->word", "emb.pos": "w->pos", "emb.type": "w->type",
              "emb.ln.w": "w->emb_ln_w", "emb.ln.b": "w->emb_ln_b", "pooler.w": "w->pooler_w",
              "pooler.b": "w->pooler_b", "lte.w": "w->lte_w", "lte.b": "w->lte_b",
              "emb.proj.w": "w->emb_proj_w", "emb.proj.b": "w->emb_proj_b",
              "prototypes": "w->prototypes", "edge_table": "w->edge_table",
              "dact.w": "w->dact_w", "dact.b": "w->dact_b"}
    if name in simple:
        return simple[name]
    parts = name.split(".")
    if parts[0] == "layers":
        field = {"attn.qkv": "qkv", "attn.o": "o", "attn.ln": "attn_ln",
                 "ffn.up": "up", "ffn.down": "down", "ffn.ln": "ffn_ln"}[".".join(parts[2:4])]
        return f"w->layer[{int(parts[1])}].{field}_{parts[4]}"
    if parts[0] == "heads":
        return f"w->head[{int(parts[1])}].{'_'.join(parts[2:])}"
    if parts[0] in ("ponder", "gpf"):
        return f"w->{parts[0]}_" + "_".join(parts[1:])
    if parts[0] == "gates":
        return f"w->gate[{int(parts[1])}].{'_'.join(parts[2:])}"
    raise ValueError(f"no C field for tensor {name!r}")


def _heads_summary(plan) -> str:
    runs, prev = [], None
    for i, h in enumerate(plan.heads, start=1):
        desc = h.kind + (" l2norm" if h.l2norm else "") + (f" W={h.width}/{h.attn_heads}h" if h.width else "") + \
            (f" {h.act}" if h.act != "tanh" else "")
        if runs and desc == prev:
            runs[-1][1] = i
        else:
            runs.append([i, i, desc])
        prev = desc
    return ", ".join(f"layer {a}: {d}" if a == b else f"layers {a}-{b}: {d}" for a, b, d in runs)


def provenance(plan, what: str) -> str:
    lines = [
        f"{what}: generated by refexit {refexit.__version__} (codegen format {CODEGEN_FORMAT}). Do not edit;",
        "regenerate with `refexit compile` or codegen.compile_model.",
        f"model:   {plan.source or '(in memory)'}",
        f"hash:    {plan.model_hash} (sha256 of the weights payload)",
        f"config:  layers={plan.num_layers} hidden={plan.hidden} heads={plan.num_heads} "
        f"intermediate={plan.intermediate} vocab={plan.vocab_size} positions={plan.max_position} "
        f"types={plan.type_vocab} act={plan.activation} eps={plan.layer_norm_eps!r}",
        f"labels:  {plan.num_labels} {plan.label_names}",
        *([f"family:  {plan.model_type}: token_types={plan.token_types} embedding_size={plan.embedding_size} "
           f"position_offset={plan.position_offset} shared_layers={plan.shared_layers}"]
          if plan.model_type != "bert" else []),
        f"exits:   {_heads_summary(plan)}; lte={'yes' if plan.lte else 'no'}; "
        f"ponder={'hidden ' + str(plan.ponder_hidden) if plan.ponder_hidden else 'no'}"
        + ("; prototypes=yes" if plan.prototypes else "")
        + (f"; edge_table={plan.edge_rows} rows" if plan.edge_rows else "")
        + (f"; gpf=yes (pool {plan.gpf_pool})" if getattr(plan, "gpf", False) else "")
        + ("; dact=yes" if getattr(plan, "dact", False) else "")
        + (f"; skip gates W={plan.gate_width}/{plan.gate_heads}h" if getattr(plan, "gate_width", 0) else ""),
        f"policy:  {plan.policy.repr}",
        f"options: prefix={plan.prefix} max_length={plan.max_length} max_batch={plan.max_batch} "
        f"max_tokens={plan.max_tokens} precision={plan.precision}",
        *([f"tokens:  keep {', '.join(f'{r:.17g}' for r in plan.keep)} (token reduction, per layer)"]
          if plan.keep else []),
        f"weights: {plan.prefix}.weights (format {pack.FORMAT_VERSION}, {pack.file_size(plan)} bytes)",
    ]
    body = "\n".join(" * " + c_comment(line) for line in lines)
    return "/*\n" + body + "\n */"


def _context(plan) -> dict:
    pol = plan.policy
    L = plan.num_layers
    how = "inclusive" if pol.inclusive else "strict"
    between = " (or earlier, by the entropy rule)" if pol.check_between else ", checking nothing in between"
    rule = POLICY_RULES[pol.name].format(op="<=" if pol.inclusive else "<", how=how, between=between)
    thresholds = list(pol.thresholds) + [0.0]                 # [L]: the last one is never read
    head_layers = [(i, h) for i, h in enumerate(plan.heads) if h.kind != "none"]
    kinds = {"pooler": any(h.kind in ("pooler_linear", "shared_pooler", "scalar_mix") for _, h in head_layers),
             "mean_linear": any(h.kind == "mean_linear" for _, h in head_layers),
             "scalar_mix": any(h.kind == "scalar_mix" for _, h in head_layers)}
    hb = bytes.fromhex(plan.model_hash)
    fmt = {"version": pack.FORMAT_VERSION, "header_size": pack.HEADER_SIZE,
           "file_size": pack.file_size(plan),
           "magic": ", ".join(f"'{chr(b)}'" for b in pack.MAGIC),
           "hash_bytes": ", ".join(f"0x{b:02x}" for b in hb),
           "dims": ", ".join(str(d) for d in plan.dims()), "panel": pack.PANEL,
           "precision_code": pack.PRECISION_CODES[plan.precision], "bf16_k": pack.BF16_K,
           "int8_k": pack.INT8_K}
    return dict(
        p=plan, prefix=plan.prefix, bf16=plan.precision == "bf16", int8=plan.precision == "int8",
        qkv_bf16=plan.precision == "int8" and "attn.qkv.w" in pack.packed_in_bf16(),   # int8 keeps qkv in bf16
        PREFIX=plan.prefix.upper(), errors=[e[:3] for e in ERRORS],
        fb=plan.fastbert, kinds=kinds, head_layers=head_layers,
        gpf_mean=pol.name == "gpf" and plan.gpf_pool == "mean",     # its poolers read mean_features
        pooler_acts=any(h.act != "tanh" for _, h in head_layers),     # a relu / gelu classifier (families)
        last_reads_cls=plan.heads[L - 1].kind in ("pooler_linear", "shared_pooler", "scalar_mix"),
        slots=[(c_lvalue(s.name), s) for s in plan.tensors],
        shared_pooler_layers=[i for i, h in head_layers if h.kind in ("shared_pooler", "scalar_mix")],
        missing_head_layers=[(i, h) for i, h in enumerate(plan.heads[:L - 1]) if h.kind == "none"],
        label_names=", ".join(c_string(n) for n in plan.label_names),
        thresholds=", ".join(c_float(t) for t in thresholds),
        temperatures=", ".join(c_float(t) for t in pol.temperatures),
        keep_c=", ".join(c_double(r) for r in plan.keep) if plan.keep else "",
        pol=dict(name=pol.name, count=pol.count, inclusive=pol.inclusive, tau=pol.tau, lam=pol.lam,
                 check_between=pol.check_between, arms=pol.arms, ucb_c=pol.ucb_c, cost=pol.cost,
                 arms_c=", ".join(c_float(a) for a in pol.arms),
                 repr_comment=c_comment(pol.repr), rule=rule, gate=pol.gate),
        gates=getattr(plan, "gate_width", 0) > 0,
        fmt=fmt)


def emit(plan) -> tuple[str, str]:
    """Plan -> (header text, source text)."""
    if plan.has_pooler is False and any(h.kind in ("shared_pooler", "scalar_mix") for h in plan.heads):
        raise ValueError("shared_pooler and scalar_mix heads need the model's pooler")
    env = environment()
    ctx = _context(plan)
    header = env.get_template("model.h.j2").render(provenance=provenance(plan, f"{plan.prefix}.h"), **ctx)
    source = env.get_template("model.c.j2").render(provenance=provenance(plan, f"{plan.prefix}.c"), **ctx)
    return header, source + text_source(plan, env, ctx)


def write_text_atomic(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        files.set_mode(tmp)                  # mkstemp made it 0600: the user's umask decides
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_sources(plan, out_dir) -> tuple[Path, Path]:
    header, source = emit(plan)
    out = Path(out_dir)
    return (write_text_atomic(out / f"{plan.prefix}.h", header),
            write_text_atomic(out / f"{plan.prefix}.c", source))
