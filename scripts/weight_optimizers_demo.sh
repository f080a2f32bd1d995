#!/bin/bash
# The weight-optimizer figures in the README, run after `make main` in the same checkout:
# a warmed-up model, GRPO from it, cross-entropy vs DFT fine-tuning from it (same step count),
# and pseudo-labels with the main-job tagger. About 25 minutes on 2 CPU cores.
set -euxo pipefail
export LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
M=${MEDPROG:-.venv/bin/medprog}
R=${RUN:-runs}
$M compile tagger --optimizer dft --train $R/meddec --out $R/warm -o time_budget_s=90
$M compile tagger --optimizer grpo --base $R/warm --train $R/meddec --out $R/warm-grpo \
   -o steps=30 -o num_generations=4 -o batch_size=16 -o limit=480 -o learning_rate=5e-4
$M eval $R/warm-grpo --data $R/meddec --split val --out $R/warm-grpo-dev --concurrency 8 --no-progress
for loss in ce dft; do
  $M compile tagger --optimizer dft --base $R/warm --train $R/meddec --out $R/warm-$loss \
     -o loss=$loss -o lora=false -o max_steps=400 -o time_budget_s=5000
done
$M data synth meddec --out $R/unlabelled --n 80 --seed 11
$M compile tagger --optimizer pseudolabel --base $R/tagger --train $R/meddec --out $R/tagger-pl \
   -o unlabelled=$R/unlabelled -o max_steps=400 -o time_budget_s=5000
