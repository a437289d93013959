#!/usr/bin/env bash
# mix.balance rows of the recipe-v2 ablation on corpus v2.2 (see benchmarks/README.md section 9)
cd "$(dirname "$0")/.."
CORPUS=${CORPUS:-/work/cache/cv22/manifest.csv}   # a corpus v2.2 build: bash recipes/sound-corpus/build.sh DIR
base=(-c recipes/default-separator/config.yaml --data "$CORPUS" --steps 30 --batch-size 4
      --set train.init=default --set optim.lr=0.0005 --set optim.warmup=0.1 --set mix.loop_prob=0.5
      --set validation.mixtures=0 --set checkpoint.every=1000 --set log.every=5 --set train.seed=0 -q --device cpu)
for row in baseline_cv22:0 balance05:0.5 balance1:1; do
  name=${row%%:*}; bal=${row##*:}
  [ -f runs/abl22/$name/separator.safetensors ] && continue
  s=$(date +%s)
  OMP_NUM_THREADS=2 nice -n 10 python3 -m macs_cli train-sep "${base[@]}" --set mix.balance=$bal -o runs/abl22/$name
  echo "$name $(( $(date +%s) - s )) s"
done
OMP_NUM_THREADS=2 nice -n 10 python3 benchmarks/recipe_v2_ablation.py --corpus "$CORPUS" \
  --run v1=default --run baseline_cv22=runs/abl22/baseline_cv22 --run balance05=runs/abl22/balance05 \
  --run balance1=runs/abl22/balance1 --baseline baseline_cv22 --mixtures 20 --sources 2 3 4 \
  --out benchmarks/results/recipe_v2_ablation_balance.json
