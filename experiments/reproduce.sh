#!/usr/bin/env bash
# Reruns the document suite's second edition (experiments/e2_*.yaml, sweep cells included), doc 004's
# grid / random / TPE searches, and every report. Finished runs and trials are skipped and interrupted
# ones resume from their last checkpoint, so running it again after a crash continues the work.
# Expected wall time on the project's 2-core machine: about 14 hours (README, "Second edition (planned)").
# The first edition (the other experiments/*.yaml) stays reproducible from its own commits.
# Usage: experiments/reproduce.sh [--jobs N]   (from any directory; uses .venv/ when present)
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PWD/.venv/bin:$PATH"  # the README's virtualenv, when there is one
if [ -n "$(git status --porcelain -- keras_stability experiments)" ]; then
  echo "reproduce.sh: commit the code and experiment files first: every run records its commit" >&2
  exit 1
fi
keras-stability run experiments/e2_*.yaml "$@"
for sampler in grid random tpe; do
  keras-stability search experiments/e2_doc004_as_written.yaml --sampler "$sampler" --study "$sampler"
done
keras-stability report results/ --readme README.md  # every report, the claims ledger and the README's verdict table
