#!/usr/bin/env bash
# Reruns the whole document suite, the doc-004 searches and every report. Finished runs and trials
# are skipped and interrupted ones resume, so running it again after a crash continues the work.
# Usage: experiments/reproduce.sh [--jobs N]   (from any directory; uses .venv/ when present)
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PWD/.venv/bin:$PATH"  # the README's virtualenv, when there is one
keras-stability run experiments/ "$@"
for sampler in grid random tpe; do
  keras-stability search experiments/doc004_cnn.yaml --sampler "$sampler" --study "$sampler" \
    --set dataset.train_size=2000
done
keras-stability report results/ --readme README.md
