#!/bin/bash
# SmartBERT skip gates on the four data sets (docs/methods.md, "SmartBERT"): train the gates on the
# frozen all-MiniLM-L6-v2 with its mean_linear DeeBERT exits (EXITS_ROOT/exits-<d>-mean_linear-deebert-seed0),
# then `evaluate --sweep` every policy on a seeded subset of dev and test.
# Usage: bash tools/smartbert_real.sh EXITS_ROOT
# The sizes are what the run of 2026-12-07 could afford: the NumPy forward and backward pass through
# the frozen MiniLM ran on two cores shared with five other jobs (about 0.8 s per text forward).
set -e
root=$1
M=$(refexit data path all-MiniLM-L6-v2)
for spec in sms_spam:320:200:120 rotten_tomatoes:160:64:120 tweets:160:64:120 bbc_news:160:64:60; do
  IFS=: read -r d train dev lim <<< "$spec"
  refexit train-gates "$M" --exits "$root/exits-$d-mean_linear-deebert-seed0" --out out/gates-$d \
      --max-train "$train" --epochs 2 --soft-epochs 1 --max-dev "$dev"
  refexit evaluate "$M" --exits out/gates-$d --sweep --out out/gates-$d --no-plot --limit "$lim"
done
