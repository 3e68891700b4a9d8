#!/bin/bash
# CascadeBERT's difficulty-aware regularisation on the real data (docs/methods.md, "CascadeBERT's
# difficulty-aware regularisation"): for each data set, mean_linear exits on the frozen all-MiniLM-L6-v2
# trained from seed 0 with cross-entropy alone (deebert) and with DAR (cascadebert, the paper's
# defaults), both with Right Tool temperatures, then `evaluate --sweep` of max_prob, static and the
# truncation cascades K = 1, 2, 3 (full dev / test splits), the cascade table and the ranking table.
# Usage: bash tools/cascade_rank_real.sh DATA [DATA ...]     (writes under out/)
set -e
M=$(refexit data path all-MiniLM-L6-v2)
for d in "$@"; do
  for obj in deebert cascadebert; do
    ex=out/dar-$d-$obj
    [ -f $ex/exits.safetensors ] || refexit train-exits "$M" --data $d --heads mean_linear --objective $obj \
        --extras calibrate --seed 0 --out $ex
    [ -f $ex/evaluate-$d.json ] || refexit evaluate "$M" --exits $ex --sweep --policy max_prob --policy static \
        --cascade 1 --cascade 2 --cascade 3 --out $ex --no-plot
  done
  python tools/cascade_table.py --by-objective out/dar-$d-deebert/evaluate-$d.json out/dar-$d-cascadebert/evaluate-$d.json
  python tools/cascade_rank_table.py "$M" --exits out/dar-$d-deebert --exits out/dar-$d-cascadebert --header --shares 0.5,0.7,0.9
done
