#!/bin/bash
# SmartBERT skip gates on the four data sets (docs/methods.md, "SmartBERT"): train the gates on the
# frozen all-MiniLM-L6-v2 with its mean_linear DeeBERT exits, then sweep every policy.
# Usage: bash tools/smartbert_real.sh EXITS_ROOT [DATASETS...]   (EXITS_ROOT holds exits-<d>-mean_linear-deebert-seed0)
# Sizes (SB_TRAIN training texts, SB_LIMIT dev and test texts) are small because the NumPy forward and
# backward pass through the frozen MiniLM ran on two cores shared with other jobs.
set -e
root=$1; shift
M=$(refexit data path all-MiniLM-L6-v2)
for d in "${@:-sms_spam rotten_tomatoes bbc_news tweets}"; do
  refexit train-gates "$M" --exits "$root/exits-$d-mean_linear-deebert-seed0" --out out/gates-$d \
      --max-train ${SB_TRAIN:-320} --epochs 2 --soft-epochs 1 --max-dev 200
  refexit evaluate "$M" --exits out/gates-$d --sweep --out out/gates-$d --no-plot --limit ${SB_LIMIT:-400}
done
