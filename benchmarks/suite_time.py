"""Run time of the committed suite, from the runs' own meta.json and timing.csv.

    python benchmarks/suite_time.py [RESULTS]      (default: results/)

Per experiment: the runs it trained (shared runs, which link another experiment's training, are
counted once, where they were trained), the commits they came from, and their run time: the sum
of each run's started → finished seconds. A run interrupted and resumed later would count the pause,
so where that span exceeds the run's epoch seconds (timing.csv) by more than `PAUSE_SECONDS`, the
epoch seconds stand in. Runs that ran side by side (`--jobs 2`, or two runner processes) each count
their own seconds, so the total is core time, not wall time: on 2 cores with `--jobs 2`, wall time
is about half of it.
"""

import csv
import json
import os
import sys
from collections import defaultdict

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

from keras_stability.runs.key import find_run_directories  # noqa: E402

PAUSE_SECONDS = 60.0


def epoch_seconds(directory):
    with open(os.path.join(directory, "timing.csv"), newline="", encoding="utf-8") as stream:
        return sum(float(row["seconds"]) for row in csv.DictReader(stream))


def run_seconds(directory, meta):
    epochs = epoch_seconds(directory)
    span = meta["finished"] - meta["started"]
    return (epochs, True) if span > epochs + PAUSE_SECONDS else (span, False)


def main(results):
    table = defaultdict(lambda: {"runs": 0, "seconds": 0.0, "paused": 0, "commits": set()})
    for directory in find_run_directories(results):
        with open(os.path.join(directory, "meta.json"), encoding="utf-8") as stream:
            meta = json.load(stream)
        if "shared_from" in meta or meta.get("finished") is None:
            continue
        seconds, paused = run_seconds(directory, meta)
        row = table[meta["experiment"]]
        row["runs"] += 1
        row["seconds"] += seconds
        row["paused"] += paused
        row["commits"].add(meta["git"]["commit"][:8] + ("+dirty" if meta["git"]["dirty"] else ""))
    print(f"{'experiment':32} {'runs':>6} {'run time':>10}  commits (runs resumed after a pause)")
    for name, row in sorted(table.items()):
        paused = f" ({row['paused']} resumed)" if row["paused"] else ""
        print(f"{name:32} {row['runs']:6d} {row['seconds'] / 60:8.1f} m  {', '.join(sorted(row['commits']))}{paused}")
    total = sum(row["seconds"] for row in table.values())
    print(f"{'total':32} {sum(row['runs'] for row in table.values()):6d} {total / 60:8.1f} m")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results"))
