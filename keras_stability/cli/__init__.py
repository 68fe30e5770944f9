"""The `keras-stability` command: run, validate and list experiments; a one-command demo."""

import argparse
import glob
import os
import sys

from keras_stability.experiments.database import DEFAULT_HEARTBEAT_S, GRACE_HEARTBEATS

# The demo's choices; argparse needs them before anything imports TensorFlow.
ONE_ARGUMENT_TRANSFORMS = ("clip_by_value", "clip_by_norm", "clip_by_global_norm", "normalize_gradient")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-stability",
        description="Gradient-stability toolkit for Keras: transforms, telemetry and reproducible runs.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run experiment files (skips finished runs, resumes interrupted ones)")
    run.add_argument("files", nargs="+", metavar="FILE", help="experiment YAML files or directories of them")
    run.add_argument("--results", default="results", help="results root directory (default: ./results)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting in every run, e.g. --set optimizer.learning_rate=0.1 (repeatable)",
    )
    run.add_argument("--jobs", type=int, default=1, help="parallel runner processes (default: 1)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.add_argument(
        "--no-tensorboard", action="store_true", help="write no TensorBoard event files (<run>/tensorboard/)"
    )

    validate = commands.add_parser("validate", help="check experiment files without running them")
    validate.add_argument("files", nargs="+", metavar="FILE", help="experiment YAML files or directories of them")
    validate.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="check with these overrides applied (repeatable)",
    )

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

    report = commands.add_parser("report", help="compare runs over seeds: tables, plots, HTML, claims ledger")
    report.add_argument(
        "results", metavar="RESULTS", help="results/<experiment> for one experiment, or results/ for all"
    )
    report.add_argument("-o", "--output", help="output directory (default: reports/<experiment> or reports/)")
    report.add_argument("--claims", help="claims file to judge (default: experiments/claims.yaml if it exists)")
    report.add_argument(
        "--readme",
        metavar="FILE",
        help="also write the ledger's verdict table into FILE, between its ledger marker lines",
    )

    compact = commands.add_parser("compact", help="gzip finished runs' steps.csv (results from before runs did)")
    compact.add_argument("results", metavar="RESULTS", help="a results directory (every run under it)")

    listing = commands.add_parser("list", help="list datasets, models, transforms and experiments")
    listing.add_argument(
        "--experiments", default="experiments", help="directory of experiment files (default: ./experiments)"
    )

    demo = commands.add_parser(
        "demo", help="train the 784-128-64-10 MLP on the embedded MNIST digits with gradient telemetry"
    )
    demo.add_argument("--epochs", type=int, default=3, help="training epochs (default: 3)")
    demo.add_argument(
        "--transform",
        choices=ONE_ARGUMENT_TRANSFORMS + ("none",),
        default="clip_by_global_norm",
        help="gradient transform taking one threshold argument (default: clip_by_global_norm)",
    )
    demo.add_argument("--threshold", type=float, default=1.0, help="the transform's threshold (default: 1.0)")
    demo.add_argument("--learning-rate", type=float, default=0.1, help="SGD learning rate (default: 0.1)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return parser


def expand(paths):
    """Files as given; directories become their *.yaml files (claims.yaml is not an experiment)."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += [
                f for f in sorted(glob.glob(os.path.join(path, "*.yaml"))) if os.path.basename(f) != "claims.yaml"
            ]
        else:
            files.append(path)
    return files


def load_all(paths, overrides):
    """The experiments of `paths` that are valid, and a `Problem` for everything wrong with the rest."""
    from keras_stability.experiments.loading import ConfigError, Location, Problem, load_experiment

    experiments, problems = [], []
    for path in expand(paths):
        try:
            experiments.append(load_experiment(path, overrides))
        except ConfigError as error:
            problems.extend(error.problems)
    names = {}
    for experiment in experiments:
        if experiment.name in names:
            problems.append(
                Problem(
                    Location(experiment.path),
                    None,
                    f"name {experiment.name!r} is also used by {names[experiment.name]}",
                )
            )
        names[experiment.name] = experiment.path
    return experiments, problems


def print_problems(problems):
    print("\n".join(map(str, problems)), file=sys.stderr)


def command_run(args):
    if args.jobs < 1:
        print(f"keras-stability run: --jobs must be ≥ 1. Received: --jobs {args.jobs}.", file=sys.stderr)
        return 2
    experiments, problems = load_all(args.files, args.overrides)
    if problems:
        print_problems(problems)
        return 2
    from keras_stability.experiments.suite import run_experiments

    outcomes = run_experiments(
        experiments,
        args.results,
        jobs=args.jobs,
        show_progress=not args.no_progress,
        tensorboard=not args.no_tensorboard,
    )
    print("runs: " + ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items())))
    return 1 if outcomes.get("failed") else 0


def command_validate(args):
    experiments, problems = load_all(args.files, args.overrides)
    if problems:
        print_problems(problems)
        return 2
    for experiment in experiments:
        runs = len(experiment.runs())
        counts = f"{len(experiment.variants)} variants, {runs} runs, baseline {experiment.baseline}"
        print(f"{experiment.path}: ok ({experiment.name}: {counts})")
    return 0


def command_list(args):
    from keras_stability.experiments.sections import known_names
    from keras_stability.experiments.training import OPTIMIZERS
    from keras_stability.nonfinite import POLICIES
    from keras_stability.transforms import FACTORIES

    print("datasets:   " + ", ".join(known_names("dataset")) + ", or {factory: module:function}")
    print("models:     " + ", ".join(known_names("model")) + ", or {factory: module:function}")
    print("optimizers: " + ", ".join(OPTIMIZERS))
    print("transforms: " + ", ".join(FACTORIES))
    print("nonfinite:  " + ", ".join(POLICIES))
    files = expand([args.experiments]) if os.path.isdir(args.experiments) else []
    print(f"experiments in {args.experiments}/:" + ("" if files else " none"))
    experiments, problems = load_all(files, [])
    for experiment in experiments:
        seeds = experiment.variants[experiment.baseline].seeds
        print(f"  {experiment.path}  {experiment.name}: {', '.join(experiment.variants)} × seeds {seeds}")
    for problem in problems:
        print(f"  invalid: {problem}")
    return 0


def command_search(args):
    from keras_stability.experiments.loading import ConfigError, Location, Problem, validate
    from keras_stability.experiments.schema import SearchConfig

    experiments, problems = load_all([args.file], args.overrides)
    if not problems and experiments[0].search is None:
        problems = [Problem(Location(args.file), None, "no `search:` section (see the README's Search section)")]
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
            validate(SearchConfig, {**experiments[0].search.model_dump(), "sampler": args.sampler}, [])
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
    from keras_stability.experiments.database import StorageError, storage_url
    from keras_stability.experiments.loading import Location, Problem

    experiments, problems = load_all([args.file], args.overrides)
    if not problems and experiments[0].sweep is None:
        problems = [Problem(Location(args.file), None, "no `sweep:` section (see the README's Sweeps section)")]
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


def command_report(args):
    from keras_stability.experiments.loading import ConfigError
    from keras_stability.report import build_reports

    if not os.path.isdir(args.results):
        print(f"keras-stability report: no such directory: {args.results}", file=sys.stderr)
        return 2
    claims = args.claims or ("experiments/claims.yaml" if os.path.exists("experiments/claims.yaml") else None)
    try:
        _, verdicts = build_reports(args.results, args.output, claims)
    except ConfigError as error:
        print_problems(error.problems)
        return 2
    except FileNotFoundError as error:
        print(f"keras-stability report: {error}", file=sys.stderr)
        return 2
    if args.readme:
        from keras_stability.report.readme import update_readme

        try:
            update_readme(args.readme, verdicts)
        except (OSError, ValueError) as error:
            print(f"keras-stability report: {error}", file=sys.stderr)
            return 2
    return 0


def command_compact(args):
    from keras_stability.experiments.step_logs import compact_results
    from keras_stability.report.collect import find_run_directories

    if not os.path.isdir(args.results):
        print(f"keras-stability compact: no such directory: {args.results}", file=sys.stderr)
        return 2
    print(compact_results(args.results, find_run_directories(args.results)))
    return 0


def command_demo(args):
    if args.epochs < 1 or args.threshold <= 0 or args.learning_rate <= 0:
        print("keras-stability demo: --epochs, --threshold and --learning-rate must be > 0.", file=sys.stderr)
        return 2
    from keras_stability.demo import run_demo

    run_demo(
        epochs=args.epochs,
        transform=None if args.transform == "none" else args.transform,
        threshold=args.threshold,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    return 0


COMMANDS = {
    "run": command_run,
    "validate": command_validate,
    "search": command_search,
    "sweep": command_sweep,
    "report": command_report,
    "compact": command_compact,
    "list": command_list,
    "demo": command_demo,
}


def main(argv=None):
    # TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) buries the output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
