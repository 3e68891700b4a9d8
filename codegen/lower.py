"""Lowering: a refexit.Model + an exit Policy -> a static Plan.

The Plan is everything the C code is specialised on: dimensions, the head kind after every layer,
the policy and its parameters, the compiled maxima (sequence length, batch), the symbol prefix, and
the layout of the weights blob with the model hash. It holds no weights: `pack.write_blob` reads
them from the model in the order of `Plan.tensors`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from refexit import arch, validate
from refexit.errors import InputError
from refexit.policies import Policy

from . import pack

IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,40}$")
# prefixes whose generated names are macros of the C library (<unistd.h> defines F_OK, R_OK, W_OK, X_OK)
RESERVED_PREFIXES = {"f", "r", "w", "x"}
DEFAULT_MAX_BATCH = 32          # samples per internal chunk (classify_batch takes any batch size)
DEFAULT_TOKEN_BUDGET = 4096     # tokens per internal chunk, at least max_length
ACTIVATION_C = {"gelu": "gelu_erf", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
HEAD_KIND_IDS = {"none": 0, "pooler_linear": 1, "shared_pooler": 2, "mean_linear": 3, "fastbert": 4, "scalar_mix": 5}
POLICY_KINDS = ("entropy", "norm_entropy", "max_prob", "learned", "ponder", "patience", "window", "static", "de3", "edgebert",
                "ceebert", "gpf", "dact")
POLICY_KINDS += ("smartbert",)   # SmartBERT: skip gates (compiled in with this policy only) + entropy exit
TOKEN_REDUCTION_REFUSED = ("smartbert", "gpf")   # not combined with token reduction (untested together)
COUNT_POLICIES = ("patience", "window", "static")   # their run-time "threshold" is an integer count
MAX_EMBEDDING_SIZE = 8192       # E of a projected embedding: one row of it lives on the C stack


@dataclass(frozen=True)
class HeadPlan:
    kind: str                  # pooler_linear | shared_pooler | mean_linear | fastbert | scalar_mix | none
    feature_size: int = 0      # F: fc.w is [C, F]
    l2norm: bool = False       # mean_linear
    attn_heads: int = 0        # fastbert
    width: int = 0             # fastbert W
    act: str = "tanh"          # pooler_linear: after its pooler (refexit.heads.POOLER_ACT)

    @property
    def kind_id(self) -> int:
        return HEAD_KIND_IDS[self.kind]


@dataclass
class PolicyPlan:
    name: str                          # one of POLICY_KINDS
    thresholds: np.ndarray             # [L-1] float32 (threshold policies; zeros otherwise)
    inclusive: bool = True             # norm_entropy: <= (True) or < (False)
    count: int = 0                     # patience t, window N, static k
    tau: float | None = None           # patience/window on regression (C = 1)
    temperatures: np.ndarray = None    # [L] float32, max_prob
    lam: float = 1.0                   # de3: weight of the distance ratio in the harmonic mean
    check_between: bool = False        # edgebert: also check the entropy rule before the predicted layer
    arms: tuple = ()                   # ceebert: the thresholds its bandits choose from [K]
    ucb_c: float = 2.0                 # ceebert: UCB exploration constant
    cost: float = 0.0                  # ceebert: the reward's cost per layer (run-time: set_threshold)
    gate: float = 0.5                  # smartbert: skip layer i when its gate's sigmoid >= gate (compiled in)
    repr: str = ""
    params: dict = field(default_factory=dict)

    @property
    def uses_count(self) -> bool:
        return self.name in COUNT_POLICIES


@dataclass
class Plan:
    prefix: str
    # backbone
    vocab_size: int
    hidden: int
    num_layers: int
    num_heads: int
    intermediate: int
    max_position: int
    type_vocab: int
    activation: str                    # gelu_erf | gelu_tanh | relu
    layer_norm_eps: float
    # exits
    num_labels: int
    label_names: list
    heads: list                        # [L] HeadPlan (kind "none" where the model has no head)
    has_pooler: bool
    lte: bool
    ponder_hidden: int                 # 0: no ponder MLP
    exit_feature_size: int             # F of the heads before the last layer (LTE/ponder read it)
    policy: PolicyPlan
    # compiled maxima
    max_length: int
    max_batch: int
    max_tokens: int
    # what the layer GEMMs compute in: "fp32" or "bf16" (refexit.PRECISIONS; pack.PRECISION_CODES)
    precision: str
    # weights blob
    tensors: list                      # [pack.Slot] in blob order
    vocab_bytes: bytes
    model_hash: str = ""               # sha256 hex of the blob payload (arrays + vocab)
    source: str = ""
    warnings: list = field(default_factory=list)
    # the C tokenizer (codegen/text.py: "wordpiece", "bpe" or "none") and its settings (templates/text.c.j2)
    tokenizer: str = "none"
    special_tokens: tuple = (2, 3)     # what the C tokenizer adds around a text / a pair
    do_lower_case: bool = True
    strip_accents: bool | None = None
    tokenize_cjk: bool = True
    # the model family (refexit/arch.py): the defaults are BERT's
    model_type: str = "bert"
    token_types: bool = True           # False (DistilBERT): type ids are ignored, no type table
    embedding_size: int = 0            # E of the embedding tables when they are projected E -> H (0: none)
    position_offset: int = 0           # RoBERTa: positions start after the pad id (= pad_id + 1)
    pad_id: int = 0                    # the pad token id (RoBERTa: a real token equal to it takes position pad_id)
    shared_layers: bool = False        # ALBERT: one layer's weights in the file, applied num_layers times
    prototypes: bool = False           # DE3-BERT class prototypes [L-1, C, F] in the blob
    edge_rows: int = 0                 # rows K of the EdgeBERT exit table [K, L-1] in the blob (0: none)
    gpf: bool = False                  # Global Past-Future parameters gpf.* in the blob (refexit/gpf.py)
    gpf_pool: str = "cls"              # what its poolers read: "cls" the [CLS] row, "mean" the real tokens' mean
    dact: bool = False                 # DACT-BERT halting units dact.w [L-1, F], dact.b [L-1] in the blob
    gate_width: int = 0                # SmartBERT skip gates in the blob (policy smartbert only): width W (0: none)
    gate_heads: int = 0                # their attention heads
    keep: tuple | None = None          # token reduction: keep ratio per layer [L] (refexit.tokens; None: off)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.num_heads

    @property
    def fastbert(self) -> HeadPlan | None:
        return next((h for h in self.heads if h.kind == "fastbert"), None)

    @property
    def max_feature(self) -> int:
        return max(h.feature_size for h in self.heads if h.kind != "none")

    def dims(self) -> list[int]:
        """The dimensions written into the blob header (and checked by the C code at open)."""
        fb = self.fastbert
        return [self.vocab_size, self.hidden, self.num_layers, self.num_heads, self.intermediate,
                self.max_position, self.type_vocab, self.num_labels, self.exit_feature_size,
                fb.width if fb else 0, fb.attn_heads if fb else 0, self.ponder_hidden,
                len(self.tensors), self.embedding_size, self.position_offset, int(self.shared_layers)]


def _policy_plan(policy: Policy, L: int) -> PolicyPlan:
    name = policy.name
    if name not in POLICY_KINDS:
        raise InputError(f"codegen does not know the policy {name!r}")
    thr = np.zeros(max(L - 1, 0), np.float32)
    if hasattr(policy, "_thr"):                       # set by policy.check(): [L-1] float64
        thr = np.asarray(policy._thr, np.float64).astype(np.float32)
    temps = np.ones(L, np.float32)
    if name == "max_prob":
        temps = np.asarray(policy._temps, np.float64).astype(np.float32)
    count = {"patience": getattr(policy, "count", 0), "window": getattr(policy, "count", 0),
             "static": getattr(policy, "k", 0)}.get(name, 0)
    tau = getattr(policy, "tau", None)
    return PolicyPlan(name=name, thresholds=thr, inclusive=bool(getattr(policy, "inclusive", True)),
                      count=int(count), tau=None if tau is None else float(tau), temperatures=temps,
                      lam=float(getattr(policy, "lam", 1.0)),
                      check_between=bool(getattr(policy, "check_between", False)),
                      arms=tuple(float(a) for a in policy.arms) if name == "ceebert" else (),
                      ucb_c=float(getattr(policy, "c", 2.0)) if name == "ceebert" else 2.0,
                      cost=float(getattr(policy, "cost", 0.0)) if name == "ceebert" else 0.0,
                      gate=float(getattr(policy, "gate", 0.5)) if name == "smartbert" else 0.5,
                      repr=repr(policy), params=policy.params())


def _head_plan(head) -> HeadPlan:
    if head is None:
        return HeadPlan("none")
    if head.kind == "fastbert":
        W = head.params["proj.w"].shape[0]
        if W % head.attn_heads:
            raise InputError(f"fastbert head width {W} is not divisible by its {head.attn_heads} heads")
        return HeadPlan("fastbert", W, attn_heads=head.attn_heads, width=W)
    return HeadPlan(head.kind, head.feature_size, l2norm=bool(head.l2norm) and head.kind == "mean_linear",
                    act=head.act if head.kind == "pooler_linear" else "tanh")


def lower(model, policy: Policy | None = None, prefix: str | None = None, max_length: int | None = None,
          max_batch: int = DEFAULT_MAX_BATCH, max_tokens: int | None = None,
          precision: str | None = None) -> Plan:
    """Model + policy -> Plan. Validates the policy against the model (as the oracle does) and
    everything the C code relies on (prefix is a C identifier, one fastbert shape, sizes).
    precision: "fp32" or "bf16" (None: the model's own, model.precision, fp32 unless it was made by
    with_precision)."""
    from refexit.model import PRECISIONS
    from refexit.policies import Static
    precision = getattr(model, "precision", "fp32") if precision is None else precision
    if precision not in PRECISIONS or precision not in pack.PRECISION_CODES:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    cfg = model.config
    L = cfg.num_hidden_layers
    policy = policy if policy is not None else Static(L)
    warnings = model.check_policy(policy)
    prefix = prefix or "refexit_model"
    if not IDENT.match(prefix):
        raise InputError(f"prefix {prefix!r} is not a C identifier starting with a letter (letters, "
                         f"digits, _; at most 41)")
    if prefix.lower() in RESERVED_PREFIXES:
        raise InputError(f"prefix {prefix!r} would define {prefix.upper()}_OK, a macro of <unistd.h>; "
                         f"choose a longer prefix")
    P = cfg.max_positions                 # RoBERTa: the positions after its offset
    if max_length is None:
        max_length = min(cfg.max_length, P)
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or not 3 <= max_length <= P:
        raise InputError(f"max_length must be an integer in [3, {P}] ([CLS], at least one token and [SEP]; "
                         f"at most the model's position embeddings), got {max_length!r}")
    if not isinstance(max_batch, (int, np.integer)) or not 1 <= max_batch <= 1 << 16:
        raise InputError(f"max_batch must be an integer in [1, 65536], got {max_batch!r}")
    if max_tokens is None:
        max_tokens = max(max_length, min(max_batch * max_length, DEFAULT_TOKEN_BUDGET))
    if not isinstance(max_tokens, (int, np.integer)) or max_tokens < max_length:
        raise InputError(f"max_tokens must be an integer >= max_length ({max_length}), got {max_tokens!r}")

    ep = model.exits
    heads = [_head_plan(h) for h in ep.heads]       # every head the model has (the blob is per model)
    fbs = {(h.width, h.attn_heads) for h in heads if h.kind == "fastbert"}
    if len(fbs) > 1:
        raise InputError(f"fastbert heads of different shapes {sorted(fbs)} are not supported")
    C = model.num_labels
    exit_feats = {h.feature_size for h in heads[:L - 1] if h.kind != "none"}
    if len(exit_feats) > 1:
        raise InputError(f"exit heads with different feature sizes {sorted(exit_feats)} are not supported")
    F = exit_feats.pop() if exit_feats else heads[L - 1].feature_size
    has_pooler = "pooler.w" in model.weights
    use_lte = ep.lte is not None and ep.lte["w"].shape == (1, F)
    use_ponder = ep.ponder is not None and ep.ponder["pos"].shape == (L, F)
    kind, vocab_bytes, _ = tokenizer_section(model.tokenizer, cfg.vocab_size)
    wordpiece = kind == "wordpiece"
    specials = (model.tokenizer.num_special_tokens(False), model.tokenizer.num_special_tokens(True)) \
        if kind != "none" else (2, 3)

    labels = validate.label_names([str(n) for n in model.label_names] or [f"LABEL_{i}" for i in range(C)], C,
                                  "the model's label names", InputError)
    plan = Plan(prefix=prefix, vocab_size=cfg.vocab_size, hidden=cfg.hidden_size, num_layers=L,
                num_heads=cfg.num_attention_heads, intermediate=cfg.intermediate_size,
                max_position=cfg.max_position_embeddings,
                type_vocab=cfg.type_vocab_size, activation=ACTIVATION_C[cfg.hidden_act],
                layer_norm_eps=float(cfg.layer_norm_eps), num_labels=C,
                label_names=labels,
                heads=heads, has_pooler=has_pooler, lte=use_lte,
                ponder_hidden=int(ep.ponder["hid.w"].shape[0]) if use_ponder else 0,
                exit_feature_size=int(F), policy=_policy_plan(policy, L),
                max_length=int(max_length), max_batch=int(max_batch), max_tokens=int(max_tokens),
                precision=precision, tensors=[], vocab_bytes=vocab_bytes, source=str(model.source or ""), warnings=list(warnings),
                tokenizer=kind, special_tokens=specials)
    tok = model.tokenizer if wordpiece else cfg
    plan.do_lower_case = bool(tok.do_lower_case)
    plan.strip_accents = tok.strip_accents
    plan.tokenize_cjk = bool(getattr(tok, "tokenize_chinese_chars", True))
    plan.model_type, plan.token_types, plan.pad_id = cfg.model_type, bool(cfg.token_types), int(cfg.pad_token_id)
    plan.position_offset, plan.shared_layers = int(cfg.position_offset), bool(cfg.shared_layers)
    if arch.has_projection(cfg):
        if cfg.embedding_size > MAX_EMBEDDING_SIZE:
            raise InputError(f"embedding_size {cfg.embedding_size} is above the {MAX_EMBEDDING_SIZE} the "
                             f"compiled embedding projection supports")
        plan.embedding_size = int(cfg.embedding_size)
    plan.prototypes = ep.prototypes is not None and ep.prototypes.shape == (L - 1, C, F)
    et = ep.edge_table
    plan.edge_rows = int(et.shape[0]) if et is not None and et.ndim == 2 and et.shape[1] == max(L - 1, 1) else 0
    plan.gpf = _gpf_ok(ep, L, cfg.hidden_size, C, policy.name == "gpf")
    if plan.gpf:
        from refexit.gpf import check_pool
        plan.gpf_pool = check_pool(getattr(ep, "gpf_pool", "cls"), "the exits' Global Past-Future parameters",
                                   InputError)
    dw = ep.dact["w"] if ep.dact is not None else None
    plan.dact = dw is not None and L > 1 and dw.shape == (L - 1, F) and ep.dact["b"].shape == (L - 1,)
    if policy.name == "smartbert":        # the gates go into the blob with the policy that reads them
        plan.gate_width, plan.gate_heads = int(ep.gates[0]["proj.w"].shape[0]), int(ep.gate_heads)
    tr = getattr(model, "token_reduction", None)
    if tr is not None:                    # the length configuration (refexit.tokens.TokenReduction)
        tr.check(L)
        if policy.name in TOKEN_REDUCTION_REFUSED:
            raise InputError(f"token reduction with the {policy.name} policy is not supported (SmartBERT's skip gates "
                             f"and Global Past-Future's own exit logits were built and tested on full-length layers)")
        plan.keep = tuple(float(r) for r in tr.keep)
    plan.tensors = pack.layout(model, plan)
    plan.model_hash = pack.model_hash(model, plan)
    return plan


def _gpf_ok(ep, L: int, H: int, C: int, needed: bool) -> bool:
    """Are the exits' Global Past-Future parameters there with their shapes? (the gpf policy: an
    InputError if not, naming the tensor)"""
    g = getattr(ep, "gpf", None)
    if g is None:
        if needed:
            raise InputError("the gpf policy needs Global Past-Future parameters (train-exits --extras gpf)")
        return False
    from refexit.gpf import check_params
    try:
        check_params(g, L, H, C, "the exits' Global Past-Future parameters", InputError)
    except InputError:
        if needed:
            raise
        return False
    return True


def tokenizer_section(tok, vocab_size: int) -> tuple[str, bytes, str]:
    """(kind, bytes, why) of the tokenizer section of the weights file for a model's tokenizer:
    ("wordpiece", vocab.txt) for a refexit.tokenizers.wordpiece.Tokenizer, ("bpe", pack_bpe(tok)) /
    ("unigram", pack_unigram(tok)) for a TokenizerJson one of the C tokenizers implements (RoBERTa's
    byte-level BPE, ALBERT's Unigram), else ("none", b"", why)."""
    from refexit.tokenizers.tokenizer_json import BPE, TokenizerJson, Unigram
    from refexit.tokenizers.wordpiece import Tokenizer
    from .tokenizer_emit import pack_bpe, pack_unigram
    if isinstance(tok, Tokenizer):
        vocab = list(tok.vocab)
        return ("wordpiece", ("\n".join(vocab) + "\n").encode("utf-8"), "") if vocab else ("none", b"", "no vocabulary")
    if not isinstance(tok, TokenizerJson):
        return "none", b"", "the model has no tokenizer"
    if tok.vocab_size > vocab_size:
        raise InputError(f"the tokenizer has {tok.vocab_size} tokens but the model's vocabulary {vocab_size}: "
                         f"token ids would run past the embedding table")
    kind, pack = {BPE: ("bpe", pack_bpe), Unigram: ("unigram", pack_unigram)}.get(type(tok.model), (None, None))
    if kind is None:
        return "none", b"", f"no C tokenizer for the {type(tok.model).__name__} model"
    try:
        return kind, pack(tok), ""
    except ValueError as e:             # a pipeline the C does not implement: token ids only in C
        return "none", b"", str(e)


def head_flops_coeffs(head) -> tuple[int, int, int]:
    """Head.flops(n) as c0 + c1 n + c2 n^2 (so a compiled folder can report FLOPs without the model)."""
    if head is None:
        return (0, 0, 0)
    f0, f1, f2 = head.flops(0), head.flops(1), head.flops(2)
    c2 = (f2 - 2 * f1 + f0) // 2
    return (f0, f1 - f0 - c2, c2)


def is_integral(x: float) -> bool:
    return math.isfinite(x) and float(x) == int(x)
