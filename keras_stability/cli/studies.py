"""`keras-stability search` and `keras-stability sweep`: Optuna studies on one machine or on workers
sharing a database."""

import os
import sys

from keras_stability.cli.inputs import load_all, print_problems
from keras_stability.experiments.database import DEFAULT_HEARTBEAT_S, GRACE_HEARTBEATS


def add_study_commands(commands):
    """Adds the search and sweep commands to the `keras-stability` subparsers `commands`."""
    search = commands.add_parser("search", help="hyper-parameter search (the file's `search:` section) with Optuna")
    search.add_argument("file", metavar="FILE", help="experiment YAML file with a `search:` section")
    search.add_argument("--results", default="results", help="results root directory (default: ./results)")
    search.add_argument(
        "--storage",
        help="Optuna storage URL shared by workers, e.g. postgresql+psycopg://user@host/db "
        "(default: $KERAS_STABILITY_STORAGE, else the file's search.storage, else a journal file under "
        "the results); keep the password out of it: PGPASSWORD or ~/.pgpass",
    )
    search.add_argument(
        "--heartbeat",
        type=int,
        default=DEFAULT_HEARTBEAT_S,
        metavar="SECONDS",
        help=f"with a database: seconds between a worker's heartbeats; a trial silent for {GRACE_HEARTBEATS} of them "
        "is retried (default: %(default)s)",
    )
    search.add_argument("--study", help="study name (default: the file's search.study)")
    search.add_argument("--trials", type=int, help="finished trials to reach (default: the file's search.trials)")
    search.add_argument(
        "--sampler", choices=["grid", "random", "tpe", "gp"], help="sampler (default: the file's search.sampler)"
    )
    search.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of every trial (repeatable)",
    )
    search.add_argument("--report", default="reports", help="where the study's report goes (default: ./reports)")

    sweep = commands.add_parser(
        "sweep", help="run the file's `sweep:` grid, on this machine or on N workers sharing a database"
    )
    sweep.add_argument("file", metavar="FILE", help="experiment YAML file with a `sweep:` section")
    sweep.add_argument(
        "--results", default="results", help="results root directory, shared by all workers (default: ./results)"
    )
    sweep.add_argument(
        "--storage",
        help="Optuna storage URL shared by workers, e.g. postgresql+psycopg://user@host/db "
        "(default: $KERAS_STABILITY_STORAGE; neither: run here, like `run`)",
    )
    sweep.add_argument("--study", help="study name in the storage (default: <experiment>-sweep)")
    sweep.add_argument(
        "--heartbeat",
        type=int,
        default=DEFAULT_HEARTBEAT_S,
        metavar="SECONDS",
        help=f"seconds between a worker's heartbeats; a run silent for {GRACE_HEARTBEATS} of them is retried (default: %(default)s)",
    )
    sweep.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting in every run (repeatable)",
    )
    sweep.add_argument("--jobs", type=int, default=1, help="without a storage: parallel runner processes (default: 1)")
    sweep.add_argument("--no-progress", action="store_true", help="without a storage: hide the progress bar")


def command_search(args):
    from keras_stability.config.loading import ConfigError, Location, Problem
    from keras_stability.config.schema import SearchConfig, with_sampler_document
    from keras_stability.config.validation import validate

    experiments, problems = load_all([args.file], args.overrides)
    if not problems and experiments[0].search is None:
        problems = [Problem(Location(args.file), None, "no `search:` section (see docs/guides/search-and-sweeps.md)")]
    if not problems and args.trials is not None and args.trials < 1:
        problems = [
            Problem(
                Location("keras-stability search"), None, f"--trials must be ≥ 1. Received: --trials {args.trials}."
            )
        ]
    if not problems and args.heartbeat < 1:
        problems = [
            Problem(
                Location("keras-stability search"),
                None,
                f"--heartbeat must be ≥ 1 second. Received: --heartbeat {args.heartbeat}.",
            )
        ]
    if not problems and args.sampler is not None:
        try:
            validate(SearchConfig, with_sampler_document(experiments[0].search, args.sampler), [])
        except ConfigError as error:
            problems = [Problem(Location(args.file), None, f"--sampler {args.sampler}: {error.problems[0].message}")]
    if problems:
        print_problems(problems)
        return 2
    import optuna

    from keras_stability.experiments.database import StorageError
    from keras_stability.experiments.search import run_search
    from keras_stability.report.search_report import write_search_report

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our per-epoch lines report progress
    experiment = experiments[0]
    try:
        study = run_search(
            experiment,
            args.results,
            args.storage,
            args.study,
            args.trials,
            args.sampler,
            log=print,
            heartbeat_s=args.heartbeat,
        )
    except StorageError as error:  # its message hides the password
        print(f"keras-stability search: {error}", file=sys.stderr)
        return 2
    directory = os.path.join(args.report, f"{experiment.name}-{study.study_name}")
    write_search_report(study, directory, experiment.search.objective)
    states = [t.state.name.lower() for t in study.trials]
    print(
        f"study {study.study_name}: "
        + ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states)))
        + f"; report: {os.path.join(directory, 'search.html')}"
    )
    return 0


def command_sweep(args):
    from keras_stability.config.credentials import storage_url
    from keras_stability.config.loading import Location, Problem
    from keras_stability.experiments.database import StorageError

    experiments, problems = load_all([args.file], args.overrides)
    if not problems and experiments[0].sweep is None:
        problems = [Problem(Location(args.file), None, "no `sweep:` section (see docs/guides/search-and-sweeps.md)")]
    if not problems and (args.heartbeat < 1 or args.jobs < 1):
        problems = [
            Problem(
                Location("keras-stability sweep"),
                None,
                f"--heartbeat and --jobs must be ≥ 1. Received: --heartbeat {args.heartbeat}, --jobs {args.jobs}.",
            )
        ]
    if problems:
        print_problems(problems)
        return 2
    url = storage_url(args.storage)
    if url is None:
        from keras_stability.experiments.suite import run_experiments

        outcomes = run_experiments(experiments, args.results, jobs=args.jobs, show_progress=not args.no_progress)
    else:
        import optuna

        from keras_stability.experiments.sweep_workers import run_sweep_worker

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our per-epoch lines report progress
        try:
            outcomes = run_sweep_worker(experiments[0], args.results, url, args.study, args.heartbeat, log=print)
        except StorageError as error:  # its message hides the password
            print(f"keras-stability sweep: {error}", file=sys.stderr)
            return 2
    print("runs: " + (", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items())) or "none left"))
    return 1 if outcomes.get("failed") else 0
