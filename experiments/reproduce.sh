#!/usr/bin/env bash
# Reruns the document suite: its third edition (experiments/e3_*.yaml, sweep cells included), the
# second-edition files it keeps (e2_*.yaml), doc 004's grid / random / TPE searches, and every report.
# Finished runs and trials are skipped and interrupted ones resume from their last checkpoint, so
# running it again after a crash continues the work. Cheap experiments first, so that a partial run
# already answers most claims; the CNNs and the two published results (the adding problem, DeepOBS's
# 100 epochs) last. Wall time on the project's 2-core machine: docs/findings.md.
# Usage: experiments/reproduce.sh [--jobs N]   (from any directory; uses .venv/ when present)
#   RESULTS=DIR: the results root (default results/); REPORTS=DIR: the reports root (default reports/).
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PWD/.venv/bin:$PATH"  # the set-up command's virtualenv, when there is one
RESULTS="${RESULTS:-results}"
REPORTS="${REPORTS:-reports}"
# "Dirty" as the runner records it: keras_stability/runs/provenance.py's CODE_PATHS (a test ties them).
if [ -n "$(git status --porcelain --untracked-files=no -- keras_stability experiments pyproject.toml)" ]; then
  echo "reproduce.sh: commit the code and experiment files first: every run records its commit" >&2
  exit 1
fi
run() {
  for experiment in "$@"; do
    keras-stability run "experiments/$experiment.yaml" --results "$RESULTS" "${RUN_OPTIONS[@]}"
  done
}
RUN_OPTIONS=("$@")
run e3_mlp_regimes e3_doc003_as_written e3_doc002_regimes e3_thresholds e3_sparse e3_sharpness e3_edge_of_stability \
  quickstart \
  e2_doc002_as_written e2_doc004_as_written e2_doc004_regimes
for sampler in grid random tpe; do
  keras-stability search experiments/e2_doc004_as_written.yaml --sampler "$sampler" --study "$sampler" \
    --results "$RESULTS" --report "$REPORTS"
done
run e2_doc000_as_written e2_adding_problem e2_deepobs_fmnist_2c2d e3_doc000_as_written e3_pascanu_adding \
  e3_doc004_as_written
# Every report, the claims ledger and the findings page's tables.
keras-stability report "$RESULTS" --output "$REPORTS" --findings docs/findings.md
