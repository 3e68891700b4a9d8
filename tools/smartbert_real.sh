#!/bin/bash
# SmartBERT skip gates on real data (docs/methods.md, "SmartBERT"): train the gates on the frozen
# all-MiniLM-L6-v2 with its mean_linear DeeBERT exits (EXITS_ROOT/exits-<d>-mean_linear-deebert-seed0),
# then `evaluate --sweep` every policy (full dev / test splits, or a seeded subset of LIMIT each).
# Usage: bash tools/smartbert_real.sh EXITS_ROOT [DATA:TRAIN:DEV:LIMIT ...]
#   TRAIN: training texts (a shuffled subset; "all": the whole training split); DEV: dev texts of
#   train-gates' per-epoch report; LIMIT: evaluate's --limit (empty: the full dev / test splits).
# Without specs: the sizes of the first run (2026-12-07), what two cores shared with five other jobs
# could afford. Output: out/gates-<d>/ (exits with gates, evaluate-<d>.json); an existing
# out/gates-<d>/exits.safetensors is not retrained.
set -e
root=$1
shift
specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(sms_spam:320:200: rotten_tomatoes:160:64: bbc_news:48:32: tweets:160:64:120)
M=$(refexit data path all-MiniLM-L6-v2)
for spec in "${specs[@]}"; do
  IFS=: read -r d train dev lim <<< "$spec"
  [ "$train" = all ] && train=100000000
  [ -f out/gates-$d/exits.safetensors ] || refexit train-gates "$M" --exits "$root/exits-$d-mean_linear-deebert-seed0" \
      --out out/gates-$d --max-train "$train" --epochs 2 --soft-epochs 1 --max-dev "$dev"
  refexit evaluate "$M" --exits out/gates-$d --sweep --out out/gates-$d --no-plot ${lim:+--limit $lim}
done
