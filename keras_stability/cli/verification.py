"""`keras-stability verify`: retrains a random sample of committed runs and says which ones it reproduced.

Each drawn run trains again from its own config.yaml in a temporary results root, as `run` trains it
(one process; TensorFlow's thread pools as the runs recorded, else as large as the machine's cpus,
unless --threads), and its
metrics.csv and step log are compared with the committed ones as float32 (`experiments.verify`).
"""

import os
import sys
import tempfile

DEFAULT_SAMPLE = 3


def add_verify_command(commands):
    """Adds the verify command to the `keras-stability` subparsers `commands`."""
    verify = commands.add_parser(
        "verify", help="retrain a random sample of finished runs and compare their numbers as float32"
    )
    verify.add_argument("results", metavar="RESULTS", help="a results directory, e.g. results/<experiment>")
    verify.add_argument("--sample", type=int, default=DEFAULT_SAMPLE, help=f"runs to draw (default: {DEFAULT_SAMPLE})")
    verify.add_argument("--seed", type=int, default=0, help="seed of the draw (default: 0)")
    verify.add_argument(
        "--runs",
        nargs="+",
        metavar="LABEL",
        help="verify these runs instead of a sample: <experiment>/<variant>/seed-<n>, or its end (<variant>/seed-<n>)",
    )
    verify.add_argument(
        "--threads",
        type=int,
        help="TensorFlow's intra- and inter-op threads (default: the count the runs recorded, else the "
        "machine's cpus, as `run` uses)",
    )


def finished_runs(root):
    """{label: directory} of the done or diverged runs under `root` (shared ones too: read through their links)."""
    from keras_stability.runs.key import RunKey, find_run_directories
    from keras_stability.runs.readers import DamagedFileError, read_json_object
    from keras_stability.runs.run_files import read_document
    from keras_stability.runs.status import FINISHED_STATUSES

    runs = {}
    for directory in find_run_directories(root):
        try:
            meta = read_json_object(os.path.join(directory, "meta.json")) or {}
            if meta.get("status") in FINISHED_STATUSES:  # a pruned trial, retrained alone, would train on
                document = read_document(directory)  # a sweep's variant holds a "/": the path cannot say
                runs[RunKey(document["experiment"], document["variant"], document["seed"]).label] = directory
        except DamagedFileError:
            continue  # `report` lists damaged runs; there is nothing here to reproduce
    return runs


def chosen(runs, args):
    """The labels to verify: --runs, else a sample drawn with --seed.

    Raises:
        ValueError: if a --runs label names no finished run, or several.
    """
    from keras_stability.experiments.verify import sample_runs

    if not args.runs:
        return sample_runs(list(runs), args.sample, args.seed)
    labels = []
    for wanted in args.runs:
        matches = [label for label in runs if label == wanted or label.endswith("/" + wanted)]
        if len(matches) != 1:
            raise ValueError(
                f"--runs {wanted} should name one finished run. Received: {len(matches)} matches under {args.results}"
            )
        labels.append(matches[0])
    return labels


def rerun(directory, label, scratch):
    """Trains the run in `directory` again under `scratch`; returns its `RunComparison`."""
    from keras_stability.config.schema import RunConfig
    from keras_stability.experiments.runner import run_one
    from keras_stability.experiments.verify import RunComparison, compare_tables
    from keras_stability.runs.epoch_record import METRIC_COLUMNS, STEP_COLUMNS
    from keras_stability.runs.key import RunKey
    from keras_stability.runs.readers import read_table
    from keras_stability.runs.run_identity import what_the_run_trains
    from keras_stability.runs.status import FINISHED_STATUSES

    with open(os.path.join(directory, "config.yaml"), encoding="utf-8") as stream:
        document = what_the_run_trains(stream.read())
    try:
        config = RunConfig.model_validate({**document["config"], "name": document["experiment"]})
    except ValueError as error:  # pydantic's ValidationError is one
        return RunComparison(label, problem=f"its config.yaml is not a valid run today: {error}")
    said = []
    status = run_one(scratch, config, document["variant"], document["seed"], log=said.append, tensorboard=False)
    if status not in FINISHED_STATUSES:
        return RunComparison(label, problem=f"the rerun ended {status}: {' | '.join(said[-2:])}")
    copy = RunKey(config.name, document["variant"], document["seed"]).directory(scratch)
    tables = []
    # The step log first: its first difference is the earliest one.
    for name, columns, key in (("steps.csv", STEP_COLUMNS, "step"), ("metrics.csv", METRIC_COLUMNS, "epoch")):
        path, committed = read_table(os.path.join(directory, name), columns)
        _, again = read_table(os.path.join(copy, name), columns)
        if committed is None or again is None:
            return RunComparison(
                label, problem=f"{name} is missing from the {'rerun' if committed else 'committed run'}"
            )
        tables.append(compare_tables(os.path.basename(path), key, committed, again))
    return RunComparison(label, tuple(tables))


def recorded_threads(metas):
    """The intra-op thread count every run in `metas` recorded (a meta.json's host), else None: runs
    trained by `run --jobs N` had cpus ÷ N threads, and the count decides Eigen's sums."""
    counts = {(meta.get("host") or {}).get("intra_op_threads") for meta in metas}
    count = counts.pop() if len(counts) == 1 else None
    return count if isinstance(count, int) and count > 0 else None  # 0: TensorFlow's default


def command_verify(args):
    if not os.path.isdir(args.results):
        print(f"keras-stability verify: no such directory: {args.results}", file=sys.stderr)
        return 2
    if args.sample < 1 or (args.threads is not None and args.threads < 1):
        received = f"--sample {args.sample}" + (f", --threads {args.threads}" if args.threads is not None else "")
        print(f"keras-stability verify: --sample and --threads must be ≥ 1. Received: {received}.", file=sys.stderr)
        return 2
    runs = finished_runs(args.results)
    if not runs:
        print(f"keras-stability verify: no finished runs under {args.results}", file=sys.stderr)
        return 2
    try:
        labels = chosen(runs, args)
    except ValueError as error:
        print(f"keras-stability verify: {error}", file=sys.stderr)
        return 2
    from keras_stability.experiments.suite import configure_threads, threads_per_job
    from keras_stability.experiments.verify import provenance_differences
    from keras_stability.runs.provenance import provenance
    from keras_stability.runs.readers import read_json_object

    metas = {label: read_json_object(os.path.join(runs[label], "meta.json")) for label in labels}
    threads = args.threads or recorded_threads(metas.values()) or threads_per_job(1)
    configure_threads(threads)
    how = "the named runs" if args.runs else f"a sample of {len(labels)} (--seed {args.seed})"
    print(
        f"verifying {how} of the {len(runs)} finished runs under {args.results} ({threads} thread{'s' if threads != 1 else ''})"
    )
    ours, reported, equal = provenance(), set(), True
    for label in labels:
        with tempfile.TemporaryDirectory(prefix="keras-stability-verify-") as scratch:
            comparison = rerun(runs[label], label, scratch)
        print(comparison.line(), flush=True)
        equal = equal and comparison.equal
        differences = tuple(provenance_differences(metas[label], ours))
        if differences and differences not in reported:  # once per distinct set: most runs share a host
            reported.add(differences)
            print("  its host and versions against this machine's: " + "; ".join(differences))
    return 0 if equal else 1
