"""Load a Hugging Face BERT folder into canonical names, checking every tensor.

Canonical names (layers 0-based as in HF; Linear weights [out, in] as in HF, never transposed):
  emb.word [V,H]  emb.pos [P,H]  emb.type [Tt,H]  emb.ln.{w,b} [H]
  layers.{i}.attn.{q,k,v,o}.{w [H,H], b [H]}  layers.{i}.attn.ln.{w,b}
  layers.{i}.ffn.up.{w [I,H], b [I]}  layers.{i}.ffn.down.{w [H,I], b [H]}  layers.{i}.ffn.ln.{w,b}
  pooler.{w [H,H], b [H]}           (optional; needed by shared_pooler heads)
  classifier.{w [C,H], b [C]}       (BertForSequenceClassification: the final head)
  heads.{i}.<param>                 exit head after layer i+1 (see heads.param_shapes)
  lte.{w [1,F], b [1]}              BERxiT learned exit
  ponder.{pos [L,F], hid.w [P,F], hid.b [P], out.w [1,P], out.b [1]}   PALBERT lambda MLP
  prototypes [L-1,C,F]              DE3-BERT class prototypes of the exit heads' features
  edge_table [K,L-1]                EdgeBERT exit table (layer-1 entropy -> later layers' entropies)
  gpf.{pool,imit,proj,gate}.{w,b}   Global Past-Future (refexit/gpf.py: [L,H,H], [L,2C,H], [C,C], ...);
                                    metadata 'gpf_pool' "cls" or "mean" (what its poolers read; absent: "cls")
  dact.{w [L-1,F], b [L-1]}         DACT-BERT halting units of layers 1..L-1

The other families (RoBERTa, XLM-R, DistilBERT, ALBERT, ELECTRA; refexit/arch.py) add
  emb.proj.{w [H,E], b [H]}         ALBERT / ELECTRA embedding projection (the emb.* tables are [., E])
  classifier.pooler.{w [H,H], b [H]}   the first Linear of a two-Linear final classifier
and ALBERT holds layers.0.* only (its one shared layer).

Layouts understood: HF BertModel / BertForSequenceClassification (`bert.` prefix), DeeBERT and
BERxiT off-ramps (`bert.encoder.highway.{i}.pooler.dense.*`, `.classifier.*`, BERxiT
`bert.encoder.lte_classifier.*`), PABEE (`classifiers.{i}.*` beside `bert.pooler.dense.*`), and
our own `exits.safetensors` (canonical names + metadata), written by `save_exits`; in the other
families the papers' own layouts of refexit/arch.py (exit_name): PABEE on ALBERT (`classifiers.{i}.*`
beside `albert.pooler.*`), DeeBERT on RoBERTa (`roberta.encoder.highway.{i}.*` and a one-Linear
`classifier.*` over `roberta.pooler.dense.*`), ELBERT on ALBERT (one shared
`albert.encoder.exit_out_layer.*`, copied after every layer).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from . import arch, jsonio, safetensors_io, validate
from .config import BertConfig
from .errors import CheckpointError
from .heads import FASTBERT_WIDTH, HEAD_KINDS, MODEL_POOLER_KINDS, ExitParams, Head, param_shapes

EXITS_FILE = "exits.safetensors"
EXITS_FORMAT = "1"

_LAYER_PARTS = {
    "attention.self.query": "attn.q", "attention.self.key": "attn.k", "attention.self.value": "attn.v",
    "attention.output.dense": "attn.o", "attention.output.LayerNorm": "attn.ln",
    "intermediate.dense": "ffn.up", "output.dense": "ffn.down", "output.LayerNorm": "ffn.ln",
}
_SUFFIX = {"weight": "w", "bias": "b", "gamma": "w", "beta": "b"}
_IGNORED = re.compile(r"^(bert\.)?embeddings\.position_ids$|^cls\.")   # buffer; MLM/NSP heads


def canonical_name(hf: str, num_layers: int) -> str | None:
    """HF / DeeBERT / BERxiT / PABEE tensor name -> canonical name; '' = known but ignored; None = unknown."""
    if _IGNORED.search(hf):
        return ""
    n = hf[5:] if hf.startswith("bert.") else hf
    *path, last = n.split(".")
    suf = _SUFFIX.get(last)
    if suf is None:
        return None
    stem = ".".join(path)
    emb = {"embeddings.word_embeddings": "emb.word", "embeddings.position_embeddings": "emb.pos",
           "embeddings.token_type_embeddings": "emb.type"}
    if stem in emb and suf == "w":
        return emb[stem]
    if stem == "embeddings.LayerNorm":
        return f"emb.ln.{suf}"
    m = re.fullmatch(r"encoder\.layer\.(\d{1,6})\.(.+)", stem)
    if m and m.group(2) in _LAYER_PARTS:
        return f"layers.{int(m.group(1))}.{_LAYER_PARTS[m.group(2)]}.{suf}"
    if stem == "pooler.dense":
        return f"pooler.{suf}"
    if stem == "classifier" and not hf.startswith("bert."):
        return f"classifier.{suf}"
    m = re.fullmatch(r"encoder\.highway\.(\d{1,6})\.(pooler\.dense|classifier)", stem)   # DeeBERT, BERxiT
    if m:
        i = int(m.group(1))
        if i == num_layers - 1:
            return ""        # DeeBERT's untrained off-ramp at layer L (a bug, methods.md): ignored
        return f"heads.{i}.{'pooler' if m.group(2) == 'pooler.dense' else 'fc'}.{suf}"
    if stem == "encoder.lte_classifier":                                              # BERxiT
        return f"lte.{suf}"
    m = re.fullmatch(r"classifiers\.(\d{1,6})", stem)                                     # PABEE
    if m and not hf.startswith("bert."):
        return f"heads.{int(m.group(1))}.fc.{suf}"
    return None


def backbone_shapes(cfg: BertConfig) -> dict[str, tuple]:
    H, I, E = cfg.hidden_size, cfg.intermediate_size, cfg.embedding_size
    shapes = {"emb.word": (cfg.vocab_size, E), "emb.pos": (cfg.max_position_embeddings, E),
              "emb.type": (cfg.type_vocab_size, E), "emb.ln.w": (E,), "emb.ln.b": (E,)}
    if not cfg.token_types:
        del shapes["emb.type"]
    if arch.has_projection(cfg):
        shapes["emb.proj.w"], shapes["emb.proj.b"] = (H, E), (H,)
    for i in range(arch.num_weight_layers(cfg)):
        for part in ("attn.q", "attn.k", "attn.v", "attn.o"):
            shapes[f"layers.{i}.{part}.w"], shapes[f"layers.{i}.{part}.b"] = (H, H), (H,)
        for part in ("attn.ln", "ffn.ln"):
            shapes[f"layers.{i}.{part}.w"], shapes[f"layers.{i}.{part}.b"] = (H,), (H,)
        shapes[f"layers.{i}.ffn.up.w"], shapes[f"layers.{i}.ffn.up.b"] = (I, H), (I,)
        shapes[f"layers.{i}.ffn.down.w"], shapes[f"layers.{i}.ffn.down.b"] = (H, I), (H,)
    return shapes


def _check(name: str, arr: np.ndarray, shape: tuple, where: str):
    if arr.dtype.kind != "f":
        raise CheckpointError(f"{where}: tensor {name!r} has dtype {arr.dtype}, expected a float type")
    if tuple(arr.shape) != tuple(shape):
        raise CheckpointError(f"{where}: tensor {name!r} has shape {list(arr.shape)}, expected {list(shape)}")


def load_checkpoint(model_dir: str | Path, dtype=np.float32, exits: str | Path | None = None):
    """-> (config, weights: canonical backbone/pooler/classifier, ExitParams, label names).

    `exits`: an exits.safetensors path; default: <model_dir>/exits.safetensors when present.
    """
    model_dir = Path(model_dir)
    cfg = BertConfig.from_dir(model_dir)
    path = model_dir / "model.safetensors"
    if not path.exists():
        bins = [p.name for p in model_dir.glob("*.bin")]
        hint = f" ({', '.join(bins)} found: convert it to safetensors; refexit never unpickles)" if bins else ""
        raise CheckpointError(f"{path} does not exist{hint}")
    raw, _ = safetensors_io.read(path)
    L = cfg.num_hidden_layers
    weights, unknown, seen = {}, [], {}
    if cfg.model_type != "bert":                  # the families' names: one fixed table each
        names, ignored = arch.canonical_names(cfg)
    for hf, arr in raw.items():
        if cfg.model_type == "bert":
            c = canonical_name(hf, L)
        else:                                     # the family's own names, then the papers' exits (arch)
            try:
                c = names.get(hf) or ("" if ignored.search(hf) else arch.exit_name(cfg, hf))
            except CheckpointError as e:
                raise CheckpointError(f"{path}: {e}") from None
        if c is None:
            unknown.append(hf)
        elif c:
            if c in seen:
                raise CheckpointError(f"{path}: tensors {seen[c]!r} and {hf!r} both map to {c!r}")
            seen[c] = hf
            weights[c] = arr
    if unknown:
        raise CheckpointError(f"{path}: {len(unknown)} unexpected tensor(s), e.g. "
                              f"{', '.join(repr(u) for u in sorted(unknown)[:5])}")
    _check_config_against_tensors(cfg, weights, seen, str(path))
    expected = backbone_shapes(cfg)
    if cfg.sinusoidal and "emb.pos" not in weights:    # DistilBERT: the table its config promises
        weights["emb.pos"], seen["emb.pos"] = arch.sinusoidal_table(cfg.max_position_embeddings,
                                                                     cfg.hidden_size), "(sinusoidal)"
    for name, shape in expected.items():
        if name not in weights:
            raise CheckpointError(f"{path}: missing tensor {_hf_hint(name, cfg)!r} (canonical {name!r})")
        _check(seen[name], weights[name], shape, str(path))
    for stray in [n for n in weights if n.startswith("layers.") and n not in expected]:
        raise CheckpointError(f"{path}: tensor {seen[stray]!r} belongs to a layer beyond "
                              f"num_hidden_layers={L}")
    H = cfg.hidden_size
    for opt, shape in (("pooler.w", (H, H)), ("pooler.b", (H,))):
        if opt in weights:
            _check(seen[opt], weights[opt], shape, str(path))
    if ("pooler.w" in weights) != ("pooler.b" in weights):
        raise CheckpointError(f"{path}: the pooler needs both {_hf_hint('pooler.w', cfg)!r} and "
                              f"{_hf_hint('pooler.b', cfg)!r}")

    _spread_shared_exit(weights, seen, L, str(path))
    heads: list = [None] * L
    lte = _take_lte(weights, seen, H, str(path))
    head_tensors = {n: a for n, a in weights.items() if n.startswith("heads.")}
    if "classifier.w" in weights or "classifier.b" in weights:
        heads[L - 1] = _classifier_head(weights, seen, cfg, str(path))
    if head_tensors:
        pabee = not any(".pooler." in n for n in head_tensors)
        _fill_heads(heads, head_tensors, seen, "shared_pooler" if pabee else "pooler_linear",
                    H, str(path), from_exits=False)
    weights = {n: a for n, a in weights.items() if not n.startswith(("heads.", "lte.", "classifier."))}
    exit_params = ExitParams(heads, lte, None, np.ones(L))
    labels = cfg.labels

    exits_path = exits_file(exits) if exits is not None else model_dir / EXITS_FILE
    if exits_path.exists():
        labels = _load_exits(exits_path, exit_params, cfg, labels)

    _check_heads(exit_params, weights, cfg, str(path))
    final = exit_params.heads[L - 1]
    if final is not None and not labels:
        labels = [f"LABEL_{i}" for i in range(final.num_labels)]
    if final is not None:
        validate.label_names(labels, final.num_labels, f"{exits_path if exits_path.exists() else path}: labels",
                             CheckpointError)
    weights = {n: np.asarray(a, dtype=dtype) for n, a in weights.items()}
    return cfg, weights, exit_params.astype(dtype), labels


def _spread_shared_exit(weights: dict, seen: dict, L: int, where: str) -> None:
    """ELBERT's one exit layer shared by every layer (shared.fc.*, shared.pooler.*; refexit/arch.py) ->
    the same arrays as heads.{i}.* after every layer (the last too, unless the file has its own classifier)."""
    shared = {n[len("shared."):]: weights.pop(n) for n in sorted(weights) if n.startswith("shared.")}
    if not shared:
        return
    if any(n.startswith("heads.") for n in weights):
        first = next(seen[n] for n in sorted(weights) if n.startswith("heads."))
        raise CheckpointError(f"{where}: a shared exit layer ({seen['shared.' + next(iter(shared))]!r}) and "
                              f"per-layer exit heads ({first!r}) in one checkpoint")
    for i in range(L - 1 if "classifier.w" in weights else L):
        for p, a in shared.items():
            weights[f"heads.{i}.{p}"], seen[f"heads.{i}.{p}"] = a, seen[f"shared.{p}"]


def _check_config_against_tensors(cfg: BertConfig, weights: dict, seen: dict, where: str):
    """The config's sizes against the tensors the file really has, before anything is sized from
    the config (a crafted num_hidden_layers or vocab_size must not cost time or memory first)."""
    layers = {int(n.split(".")[1]): n for n in sorted(weights) if n.startswith("layers.")}
    n_layers = arch.num_weight_layers(cfg)          # ALBERT: its one shared layer
    beyond = [n for i, n in layers.items() if i >= n_layers]
    if beyond:
        raise CheckpointError(f"{where}: tensor {seen[beyond[0]]!r} belongs to a layer beyond "
                              f"num_hidden_layers={cfg.num_hidden_layers}")
    if layers and max(layers) + 1 != n_layers:
        raise CheckpointError(f"{where}: config field 'num_hidden_layers' is {cfg.num_hidden_layers} but the "
                              f"checkpoint has only layers 0..{max(layers)}")
    width = "embedding_size" if arch.has_projection(cfg) else "hidden_size"
    for name, field, axis in (("emb.word", "vocab_size", 0), ("emb.word", width, 1),
                              ("emb.pos", "max_position_embeddings", 0), ("emb.type", "type_vocab_size", 0),
                              ("layers.0.ffn.up.w", "intermediate_size", 0)):
        arr = weights.get(name)
        if arr is not None and arr.ndim == 2 and arr.shape[axis] != getattr(cfg, field):
            raise CheckpointError(f"{where}: config field {field!r} is {getattr(cfg, field)} but tensor "
                                  f"{_hf_hint(name, cfg)!r} has shape {list(arr.shape)}")


def _hf_hint(canonical: str, cfg: BertConfig | None = None) -> str:
    if cfg is not None and cfg.model_type != "bert":
        return arch.hf_names(cfg).get(canonical, canonical)
    inv = {v: k for k, v in _LAYER_PARTS.items()}
    m = re.fullmatch(r"layers\.(\d+)\.(\w+\.\w+)\.(w|b)", canonical)
    if m:
        return f"encoder.layer.{m.group(1)}.{inv[m.group(2)]}.{'weight' if m.group(3) == 'w' else 'bias'}"
    simple = {"emb.word": "embeddings.word_embeddings.weight",
              "emb.pos": "embeddings.position_embeddings.weight",
              "emb.type": "embeddings.token_type_embeddings.weight",
              "emb.ln.w": "embeddings.LayerNorm.weight", "emb.ln.b": "embeddings.LayerNorm.bias"}
    return simple.get(canonical, canonical)


def _classifier_head(weights, seen, cfg, where) -> Head:
    if "classifier.w" not in weights or "classifier.b" not in weights:
        raise CheckpointError(f"{where}: the classifier needs both {_hf_hint('classifier.w', cfg)!r} and "
                              f"{_hf_hint('classifier.b', cfg)!r}")
    w, b = weights["classifier.w"], weights["classifier.b"]
    C = cfg.num_labels or w.shape[0]
    H = cfg.hidden_size
    _check(seen["classifier.w"], w, (C, H), where)
    _check(seen["classifier.b"], b, (C,), where)
    one_linear = cfg.model_type in ("roberta", "xlm-roberta") and seen["classifier.w"] == "classifier.weight"
    if one_linear and "classifier.pooler.w" in weights:       # DeeBERT's head and RoBERTa's, mixed
        raise CheckpointError(f"{where}: both a one-Linear classifier ('classifier.weight', DeeBERT's) and "
                              f"{seen['classifier.pooler.w']!r} (RobertaClassificationHead's)")
    if cfg.model_type != "bert" and "classifier.pooler.w" in arch.hf_names(cfg) and not one_linear:
        # RoBERTa / ELECTRA / DistilBERT: Linear, activation, Linear on token 0 (own pooler_linear head)
        for n, shape in (("classifier.pooler.w", (H, H)), ("classifier.pooler.b", (H,))):
            if n not in weights:
                raise CheckpointError(f"{where}: the classifier lacks {_hf_hint(n, cfg)!r}")
            _check(seen[n], weights[n], shape, where)
        return Head("pooler_linear", {"pooler.w": weights["classifier.pooler.w"],
                                      "pooler.b": weights["classifier.pooler.b"], "fc.w": w, "fc.b": b},
                    act=cfg.classifier_act)
    if "pooler.w" not in weights:
        pooler = "bert.pooler.dense.weight" if cfg.model_type == "bert" else _hf_hint("pooler.w", cfg)
        raise CheckpointError(f"{where}: a classifier needs the pooler ({pooler!r} is missing)")
    return Head("shared_pooler", {"fc.w": w, "fc.b": b})


def _take_lte(weights, seen, F, where):
    if "lte.w" not in weights and "lte.b" not in weights:
        return None
    for n, shape in (("lte.w", (1, F)), ("lte.b", (1,))):
        if n not in weights:
            raise CheckpointError(f"{where}: the learned-exit (LTE) head lacks {n!r}")
        _check(seen.get(n, n), weights[n], shape, where)
    return {"w": weights["lte.w"], "b": weights["lte.b"]}


def _fill_heads(heads, tensors, seen, kind, H, where, from_exits, l2norm=False, attn_heads=2,
                width=FASTBERT_WIDTH, final_locked=False):
    L = len(heads)
    by_layer: dict[int, dict] = {}
    for name, arr in tensors.items():
        m = re.fullmatch(r"heads\.(\d{1,6})\.(.+)", name)
        if not m:
            raise CheckpointError(f"{where}: unexpected tensor {seen.get(name, name)!r}")
        by_layer.setdefault(int(m.group(1)), {})[m.group(2)] = arr
    for i, params in sorted(by_layer.items()):
        if i >= L:
            raise CheckpointError(f"{where}: exit head tensor for layer index {i} but the model has {L} layers")
        if i == L - 1 and final_locked:
            raise CheckpointError(f"{where}: has a head after the last layer, but the checkpoint has its "
                                  f"own classifier there (the last layer always answers with it)")
        C = params["fc.w"].shape[0] if "fc.w" in params and params["fc.w"].ndim == 2 else None
        if C is None:
            raise CheckpointError(f"{where}: exit head {i} lacks 'fc.w' [C, F]")
        expected = param_shapes(kind, H, C, width, layer=i + 1)
        for pname, shape in expected.items():
            if pname not in params:
                raise CheckpointError(f"{where}: exit head {i} ({kind}) lacks tensor "
                                      f"{seen.get(f'heads.{i}.{pname}', f'heads.{i}.{pname}')!r}")
            _check(seen.get(f"heads.{i}.{pname}", f"heads.{i}.{pname}"), params[pname], shape, where)
        extra = set(params) - set(expected)
        if extra:
            raise CheckpointError(f"{where}: exit head {i} ({kind}) has unexpected tensor(s) "
                                  f"{sorted(f'heads.{i}.{e}' for e in extra)}")
        if kind == "scalar_mix":
            mix = np.asarray(params["mix"], np.float64)
            if not np.all(np.isfinite(mix)) or not np.any(mix != 0):
                raise CheckpointError(f"{where}: tensor {seen.get(f'heads.{i}.mix', f'heads.{i}.mix')!r} (the "
                                      f"scalar mix weights, L2-normalised) must be finite and not all zero")
        heads[i] = Head(kind, params, l2norm=l2norm, attn_heads=attn_heads)


def _load_exits(path: Path, ep: ExitParams, cfg: BertConfig, labels: list) -> list:
    tensors, meta = safetensors_io.read(path)
    where = str(path)
    if meta.get("refexit_exits") != EXITS_FORMAT:
        raise CheckpointError(f"{where}: not a refexit exits file (metadata 'refexit_exits' must be "
                              f"{EXITS_FORMAT!r}, got {meta.get('refexit_exits')!r})")
    kind = meta.get("kind", "")
    if kind not in HEAD_KINDS:
        raise CheckpointError(f"{where}: metadata 'kind' is {kind!r}, expected one of {HEAD_KINDS}")
    def meta_json(key, default):          # metadata values are JSON text, read as strictly as files
        return jsonio.loads(meta.get(key, default), f"{where}: metadata {key!r}", CheckpointError)

    l2norm = validate.boolean(meta_json("l2norm", "false"), f"{where}: metadata 'l2norm'", CheckpointError)
    file_labels = meta_json("labels", "[]")
    if not isinstance(file_labels, list):
        raise CheckpointError(f"{where}: metadata 'labels' must be a JSON list of strings")
    temps = meta_json("temperatures", "null")
    attn_heads = validate.integer(meta_json("attn_heads", "2"), f"{where}: metadata 'attn_heads'", 1, 1 << 10,
                                  CheckpointError)
    final_kind = meta.get("final_kind", kind)
    L, H = cfg.num_hidden_layers, cfg.hidden_size
    has_classifier = ep.heads[L - 1] is not None
    width = FASTBERT_WIDTH
    if kind == "fastbert" or final_kind == "fastbert":
        some = next((a for n, a in tensors.items() if n.endswith(".proj.w")), None)
        width = some.shape[0] if some is not None and some.ndim == 2 else FASTBERT_WIDTH
        if width < 1 or width % attn_heads:
            raise CheckpointError(f"{where}: fastbert heads of width {width} cannot be split into "
                                  f"metadata 'attn_heads' = {attn_heads} attention heads")
    heads_t = {n: a for n, a in tensors.items() if n.startswith("heads.") and not n.startswith(f"heads.{L - 1}.")}
    final_t = {n: a for n, a in tensors.items() if n.startswith(f"heads.{L - 1}.")}
    seen = {n: n for n in tensors}
    _fill_heads(ep.heads, heads_t, seen, kind, H, where, True, l2norm, attn_heads, width)
    if final_t:
        if final_kind not in HEAD_KINDS:
            raise CheckpointError(f"{where}: metadata 'final_kind' is {final_kind!r}")
        _fill_heads(ep.heads, final_t, seen, final_kind, H, where, True, l2norm, attn_heads, width,
                    final_locked=has_classifier)
    F = next((h.feature_size for h in ep.heads[:L - 1] if h is not None), H)
    lte = _take_lte(tensors, seen, F, where)
    if lte is not None:
        ep.lte = lte
    pond = {n[len("ponder."):]: a for n, a in tensors.items() if n.startswith("ponder.")}
    if pond:
        P = pond.get("hid.w", np.zeros((0, 0))).shape[0]
        for n, shape in {"pos": (L, F), "hid.w": (P, F), "hid.b": (P,), "out.w": (1, P), "out.b": (1,)}.items():
            if n not in pond:
                raise CheckpointError(f"{where}: the ponder (PALBERT) head lacks 'ponder.{n}'")
            _check(f"ponder.{n}", pond[n], shape, where)
        ep.ponder = pond
    ep.prototypes = _take_prototypes(tensors, ep, L, F, where)
    ep.edge_table = _take_edge_table(tensors, ep, L, where)
    ep.gpf = _take_gpf(tensors, ep, L, H, where)
    if "gpf_pool" in meta:               # Global Past-Future's pooling (absent: "cls", the paper's)
        from .gpf import check_pool
        if not any(n.startswith("gpf.") for n in tensors):
            raise CheckpointError(f"{where}: metadata 'gpf_pool' without Global Past-Future tensors gpf.*")
        ep.gpf_pool = check_pool(meta["gpf_pool"], f"{where}: metadata 'gpf_pool'", CheckpointError)
    ep.dact = _take_dact(tensors, ep, L, F, where)
    gate_t = {n: a for n, a in tensors.items() if n.startswith("gates.")}
    if gate_t:                           # SmartBERT skip gates (refexit/skipgates.py)
        from . import skipgates
        ep.gate_heads = validate.integer(meta_json("gate_heads", "2"), f"{where}: metadata 'gate_heads'", 1, 1 << 10,
                                         CheckpointError)
        ep.gates = skipgates.check(gate_t, L, H, ep.gate_heads, where, _check)
    other = [n for n in tensors if not n.startswith(("heads.", "lte.", "ponder.", "gpf.", "dact.", "gates."))
             and n not in ("prototypes", "edge_table")]
    if other:
        raise CheckpointError(f"{where}: unexpected tensor(s) {sorted(other)[:5]}")
    if temps is not None:
        if not isinstance(temps, list) or len(temps) != L:
            raise CheckpointError(f"{where}: metadata 'temperatures' must be {L} positive numbers, "
                                  f"got {str(temps)[:60]}")
        ep.temperatures = np.array([validate.number(t, f"{where}: metadata 'temperatures'", CheckpointError,
                                                    positive=True) for t in temps], np.float64)
    if file_labels:
        final = ep.heads[L - 1] or next((h for h in ep.heads if h is not None), None)
        validate.label_names(file_labels, final.num_labels if final is not None else None,
                             f"{where}: metadata 'labels'", CheckpointError)
        if labels and list(labels) != list(file_labels):
            raise CheckpointError(f"{where}: labels {file_labels} differ from the model's {labels}")
        return list(file_labels)
    return labels


def _take_prototypes(tensors, ep: ExitParams, L: int, F: int, where: str):
    """DE3-BERT's class prototypes [L-1, C, F] (absent in older exits files: None)."""
    if "prototypes" not in tensors:
        return ep.prototypes
    heads = [h for h in ep.heads if h is not None]
    C = heads[-1].num_labels if heads else 0
    _check("prototypes", tensors["prototypes"], (L - 1, C, F), where)
    if not np.all(np.isfinite(tensors["prototypes"])):
        raise CheckpointError(f"{where}: 'prototypes' holds NaN or infinite values")
    return tensors["prototypes"]


def _take_gpf(tensors, ep: ExitParams, L: int, H: int, where: str):
    """Global Past-Future parameters gpf.* (refexit/gpf.py; absent: None), every shape checked."""
    from .gpf import check_params
    g = {n[len("gpf."):]: a for n, a in tensors.items() if n.startswith("gpf.")}
    if not g:
        return ep.gpf
    heads = [h for h in ep.heads if h is not None]
    C = heads[-1].num_labels if heads else (g["gate.w"].shape[0] if "gate.w" in g and g["gate.w"].ndim else 0)
    return check_params(g, L, H, C, where, CheckpointError)


def _take_edge_table(tensors, ep: ExitParams, L: int, where: str):
    """EdgeBERT's exit table [K, L-1], 1 <= K <= 4096 (absent in older exits files: None)."""
    if "edge_table" not in tensors:
        return ep.edge_table
    t = tensors["edge_table"]
    K = t.shape[0] if t.ndim == 2 else 0
    _check("edge_table", t, (K, max(L - 1, 1)), where)
    if not 1 <= K <= 4096 or not np.all(np.isfinite(t)):
        raise CheckpointError(f"{where}: 'edge_table' must hold 1 to 4096 rows of finite numbers")
    return t


def _take_dact(tensors, ep: ExitParams, L: int, F: int, where: str):
    """DACT-BERT's halting units dact.w [L-1, F], dact.b [L-1] (absent in older exits files: None)."""
    names = [n for n in tensors if n.startswith("dact.")]
    if not names:
        return ep.dact
    for n in names:
        if n not in ("dact.w", "dact.b"):
            raise CheckpointError(f"{where}: unexpected tensor {n!r} (the DACT halting units are dact.w, dact.b)")
    for n, shape in (("dact.w", (L - 1, F)), ("dact.b", (L - 1,))):
        if n not in tensors:
            raise CheckpointError(f"{where}: the DACT halting units lack {n!r}")
        _check(n, tensors[n], shape, where)
        if not np.all(np.isfinite(tensors[n])):
            raise CheckpointError(f"{where}: {n!r} holds NaN or infinite values")
    return {"w": tensors["dact.w"], "b": tensors["dact.b"]}


def exits_file(path: str | Path) -> Path:
    """An exits file given as the file or as the folder holding exits.safetensors (what
    train-exits writes): -> the file; CheckpointError when there is none."""
    path = Path(path)
    if path.is_dir():
        if not (path / EXITS_FILE).is_file():
            raise CheckpointError(f"{path} is a folder without {EXITS_FILE} (pass the exits file, or the "
                                  f"folder `refexit train-exits` wrote)")
        return path / EXITS_FILE
    if not path.exists():
        raise CheckpointError(f"{path} does not exist (pass an {EXITS_FILE} file or the folder holding one)")
    return path


def _check_heads(ep: ExitParams, weights, cfg, where):
    heads = [h for h in ep.heads if h is not None]
    if not heads:
        return
    C = heads[-1].num_labels
    for i, h in enumerate(ep.heads):
        if h is None:
            continue
        if h.num_labels != C:
            raise CheckpointError(f"{where}: exit head {i} has {h.num_labels} outputs, the others {C}")
        if h.kind in MODEL_POOLER_KINDS and "pooler.w" not in weights:
            pooler = "bert.pooler.dense.weight" if cfg.model_type == "bert" else _hf_hint("pooler.w", cfg)
            pooler = f"{cfg.model_type} has no pooler" if pooler == "pooler.w" else repr(pooler)
            raise CheckpointError(f"{where}: exit head {i} uses the model's pooler, which the checkpoint lacks "
                                  f"({pooler})")
    if cfg.num_labels and C != cfg.num_labels:
        raise CheckpointError(f"{where}: heads have {C} outputs but config id2label has {cfg.num_labels}")


def save_exits(path: str | Path, ep: ExitParams, labels: list[str], extra_meta: dict | None = None,
               include_final: bool = True):
    """Write the exit heads, LTE, ponder and temperatures as an exits.safetensors file.

    include_final=False leaves out the head after the last layer (when it is the checkpoint's own
    classifier, which loads from model.safetensors)."""
    L = len(ep.heads)
    if not include_final:
        ep = ExitParams(ep.heads[:L - 1] + [None], ep.lte, ep.ponder, ep.temperatures, ep.prototypes,
                        ep.edge_table, ep.gpf, dact=ep.dact, gates=ep.gates, gate_heads=ep.gate_heads,
                        gpf_pool=ep.gpf_pool)
    exit_heads = [h for h in ep.heads[:L - 1] if h is not None]
    if not exit_heads and ep.heads[L - 1] is None:
        raise CheckpointError("no exit heads to save")
    kinds = {h.kind for h in exit_heads}
    if len(kinds) > 1:
        raise CheckpointError(f"exit heads must share one kind, got {sorted(kinds)}")
    ref = exit_heads[0] if exit_heads else ep.heads[L - 1]
    tensors = {}
    for i, h in enumerate(ep.heads):
        if h is not None:
            tensors.update({f"heads.{i}.{n}": np.asarray(a, np.float32) for n, a in h.params.items()})
    for prefix, d in (("lte", ep.lte), ("ponder", ep.ponder), ("gpf", ep.gpf), ("dact", ep.dact)):
        if d:
            tensors.update({f"{prefix}.{n}": np.asarray(a, np.float32) for n, a in d.items()})
    if ep.prototypes is not None:
        tensors["prototypes"] = np.asarray(ep.prototypes, np.float32)
    if ep.edge_table is not None:
        tensors["edge_table"] = np.asarray(ep.edge_table, np.float32)
    for i, g in enumerate(ep.gates or []):
        tensors.update({f"gates.{i}.{n}": np.asarray(a, np.float32) for n, a in g.items()})
    meta = {"refexit_exits": EXITS_FORMAT, "kind": ref.kind, "l2norm": json.dumps(bool(ref.l2norm)),
            "attn_heads": str(ref.attn_heads), "labels": json.dumps(list(labels)),
            "temperatures": json.dumps([float(t) for t in ep.temperatures])}
    if ep.heads[L - 1] is not None:
        meta["final_kind"] = ep.heads[L - 1].kind
    if ep.gates:
        meta["gate_heads"] = str(ep.gate_heads)
    if ep.gpf:
        from .gpf import check_pool
        meta["gpf_pool"] = check_pool(ep.gpf_pool, "save_exits", CheckpointError)
    meta.update(extra_meta or {})
    safetensors_io.write(path, tensors, meta)
