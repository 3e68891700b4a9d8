#!/bin/bash
# SmartBERT skip gates on the four data sets (docs/methods.md, "SmartBERT"): train the gates on the
# frozen all-MiniLM-L6-v2 with its mean_linear DeeBERT exits (EXITS_ROOT/exits-<d>-mean_linear-deebert-seed0),
# then `evaluate --sweep` every policy (full dev / test splits; tweets: a seeded subset of 120 + 120).
# Usage: bash tools/smartbert_real.sh EXITS_ROOT
# The sizes are what the run of 2026-12-07 could afford: the NumPy forward and backward pass through
# the frozen MiniLM ran on two cores shared with five other jobs.
set -e
root=$1
M=$(refexit data path all-MiniLM-L6-v2)
for spec in sms_spam:320:200: rotten_tomatoes:160:64: bbc_news:48:32: tweets:160:64:120; do
  IFS=: read -r d train dev lim <<< "$spec"
  [ -f out/gates-$d/exits.safetensors ] || refexit train-gates "$M" --exits "$root/exits-$d-mean_linear-deebert-seed0" \
      --out out/gates-$d --max-train "$train" --epochs 2 --soft-epochs 1 --max-dev "$dev"
  refexit evaluate "$M" --exits out/gates-$d --sweep --out out/gates-$d --no-plot ${lim:+--limit $lim}
done
