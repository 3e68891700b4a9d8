#!/bin/bash
# SmartBERT skip gates on the four data sets (docs/methods.md, "SmartBERT"): train the gates on the
# frozen all-MiniLM-L6-v2 with its mean_linear DeeBERT exits, then sweep every policy.
# Usage: sh tools/smartbert_real.sh EXITS_ROOT [DATASETS...]   (EXITS_ROOT holds exits-<d>-mean_linear-deebert-seed0)
set -e
root=$1; shift
M=$(refexit data path all-MiniLM-L6-v2)
for d in ${@:-sms_spam bbc_news rotten_tomatoes tweets}; do
  refexit train-gates "$M" --exits "$root/exits-$d-mean_linear-deebert-seed0" --out out/gates-$d \
      --max-train 1500 --epochs 3 --soft-epochs 1
  refexit evaluate "$M" --exits out/gates-$d --sweep --out out/gates-$d --no-plot
done
