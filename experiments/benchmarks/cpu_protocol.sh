#!/usr/bin/env bash
# The CPU benchmark protocol (experiments/benchmarks/README.md): every run in turn on an otherwise idle machine, each
# writing its JSON report under experiments/benchmarks/cpu_protocol/ and its progress (one line per measurement) beside
# it as <name>.log. About 25 minutes on 2 cores.
#   bash experiments/benchmarks/cpu_protocol.sh [name ...]     # all runs, or only the named ones
set -euo pipefail
cd "$(dirname "$0")/../.."
out=experiments/benchmarks/cpu_protocol
mkdir -p "$out"
lscpu > "$out/lscpu.txt"

declare -A runs=(
  [padding_translation]="padding_efficiency --task translation"
  [padding_summarization]="padding_efficiency --task summarization"
  [padding_dialogue]="padding_efficiency --task dialogue"
  [train_throughput]="train_throughput --rounds 5 --steps 50 --warmup 8"
  [lightning_overhead]="lightning_overhead --rounds 6 --steps 60 --profile"
  [generation]="generation_throughput --rounds 5"
  [mfu_small]="mfu --steps 60 --log-every 10"
  [mfu_base]="mfu --steps 25 --log-every 5 model=weaver_base data.max_tokens=6000"
  [mfu_big]="mfu --steps 12 --log-every 3 model=weaver_big data.max_tokens=6000"
)
order=(padding_translation padding_summarization padding_dialogue train_throughput lightning_overhead generation
  mfu_small mfu_base mfu_big)
selected=("${@:-${order[@]}}")

for name in "${selected[@]}"; do
  if [[ -z "${runs[$name]+set}" ]]; then
    echo "Unknown run '$name'; one of: ${order[*]}" >&2
    exit 2
  fi
  echo "$(date -u +%H:%M:%S) $name" >&2
  # shellcheck disable=SC2086 # the run's arguments are words
  python -m experiments.benchmarks.${runs[$name]} > "$out/$name.stdout" 2> "$out/$name.log"
  # The report is the indented JSON object the script prints last; a training run may print around it.
  sed -n '/^{$/,/^}$/p' "$out/$name.stdout" > "$out/$name.json"
  rm "$out/$name.stdout"
done
