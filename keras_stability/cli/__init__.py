"""The `keras-stability` command: run, validate, report, compact and list experiments; a one-command demo.

The command is the suite's: without the `suite` extra's packages it says which extra to install and
exits 2 (`suite_missing`); importing this module needs only the library's packages.

The search and sweep commands (Optuna studies) are in `cli.studies`, verify (retraining committed
runs to compare their numbers) in `cli.verification`; reading experiment files for
any command in `cli.inputs`; `python -m keras_stability.cli` runs `main`.
"""

import argparse
import importlib.util
import os
import sys

from keras_stability.cli.inputs import expand, load_all, print_problems
from keras_stability.cli.studies import add_study_commands, command_search, command_sweep
from keras_stability.cli.verification import add_verify_command, command_verify

# What `main` returns, as docs/guides/results.md's "Exit statuses, reruns and code changes" lists them.
EXIT_STATUSES = {
    0: "success (a report's damaged runs are listed, not an error)",
    1: "some runs failed, or a file or directory could not be written or read",
    2: "usage or configuration error (nothing was run)",
    130: "interrupted (Ctrl-C); running the same command again resumes",
}

# The modules of pyproject.toml's `suite` extra that the commands import (tests/test_library_alone.py
# ties them to the extra). Looked up, not imported, before any command runs.
SUITE_MODULES = (
    "jinja2",
    "matplotlib",
    "optuna",
    "pandas",
    "pydantic",
    "scipy",
    "sqlalchemy",
    "tensorboard",
    "tqdm",
    "yaml",
)
SUITE_INSTALL = 'pip install "keras-stability[suite]"'

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
    run.add_argument(
        "--rerun",
        action="append",
        default=[],
        metavar="PATTERN",
        help="discard and retrain the runs whose experiment/variant/seed-N matches this glob, "
        "e.g. 'quickstart/no_clip/*' (repeatable)",
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

    add_study_commands(commands)

    report = commands.add_parser("report", help="compare runs over seeds: tables, plots, HTML, claims ledger")
    report.add_argument(
        "results", metavar="RESULTS", help="results/<experiment> for one experiment, or results/ for all"
    )
    report.add_argument("-o", "--output", help="output directory (default: reports/<experiment> or reports/)")
    report.add_argument("--claims", help="claims file to judge (default: experiments/claims.yaml if it exists)")
    report.add_argument(
        "--findings",
        metavar="FILE",
        help="also write the experiments', verdict and published-results tables into FILE (the findings page, "
        "docs/findings.md), between its marker lines",
    )

    add_verify_command(commands)

    compact = commands.add_parser(
        "compact", help="gzip finished runs' steps.csv, thinning long runs' (results from before runs did)"
    )
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


def command_run(args):
    if args.jobs < 1:
        print(f"keras-stability run: --jobs must be ≥ 1. Received: --jobs {args.jobs}.", file=sys.stderr)
        return 2
    experiments, problems = load_all(args.files, args.overrides)
    if problems:
        print_problems(problems)
        return 2
    from keras_stability.experiments.suite import run_experiments, unmatched
    from keras_stability.runs.storage import check_writable

    missing = unmatched(experiments, args.rerun)  # a typo would retrain nothing, silently
    for pattern in missing:
        print(f"keras-stability run: --rerun {pattern}: matches no run (experiment/variant/seed-N)", file=sys.stderr)
    if missing:
        return 2
    check_writable(args.results)
    outcomes = run_experiments(
        experiments,
        args.results,
        jobs=args.jobs,
        show_progress=not args.no_progress,
        tensorboard=not args.no_tensorboard,
        rerun=args.rerun,
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
    from keras_stability.config.sections import known_names
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


def command_report(args):
    from keras_stability.config.loading import ConfigError
    from keras_stability.report import build_reports

    if not os.path.isdir(args.results):
        print(f"keras-stability report: no such directory: {args.results}", file=sys.stderr)
        return 2
    claims = args.claims or ("experiments/claims.yaml" if os.path.exists("experiments/claims.yaml") else None)
    from keras_stability.runs.storage import check_writable

    check_writable(args.output or "reports")
    try:
        built = build_reports(args.results, args.output, claims)
    except ConfigError as error:
        print_problems(error.problems)
        return 2
    except FileNotFoundError as error:
        print(f"keras-stability report: {error}", file=sys.stderr)
        return 2
    if args.findings:
        from keras_stability.report.findings import update_findings

        try:
            update_findings(args.findings, built.verdicts, built.published, built.suite)
        except (OSError, ValueError) as error:
            print(f"keras-stability report: {error}", file=sys.stderr)
            return 2
    return 0


def command_compact(args):
    from keras_stability.runs.key import find_run_directories
    from keras_stability.runs.step_logs import compact_results

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
    "verify": command_verify,
    "compact": command_compact,
    "list": command_list,
    "demo": command_demo,
}


# The commands that train or build models; the others do without TensorFlow (validate stays fast).
TENSORFLOW_COMMANDS = ("run", "search", "sweep", "list", "demo", "verify")


def import_tensorflow_quietly():
    """Imports TensorFlow and Keras, and probes for GPUs, with file descriptor 2 sent to /dev/null.

    Their C++ libraries write to it while they load (absl's "before InitializeLog" warning, CUDA's
    stub, oneDNN, `failed call to cuInit`), before any logging setting such as TF_CPP_MIN_LOG_LEVEL
    applies. Descriptor 2 is restored after, so errors and Python's own warnings still show."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        import keras  # noqa: F401  (imported now, while silenced)
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the CUDA probe; it leaves the runtime unstarted
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def suite_missing():
    """The `SUITE_MODULES` that cannot be imported here (a library-only install lacks them all)."""
    return [name for name in SUITE_MODULES if importlib.util.find_spec(name) is None]


def main(argv=None):
    """Runs one command; returns its exit status (`EXIT_STATUSES`)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # what TensorFlow logs once it runs
    # oneDNN's kernels give the same bits for any thread count (measured: docs/guides/results.md,
    # "Verifying committed results"), so `--jobs N` matches one process; TensorFlow turns them on by
    # itself only on CPUs with AVX512-VNNI, AVX512-BF16, AVX-VNNI or AMX. Set before TensorFlow loads;
    # an explicit 0 is kept.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    args = build_parser().parse_args(argv)
    missing = suite_missing()
    if missing:
        print(
            f"keras-stability {args.command}: the command needs the suite's packages, and some are not installed. "
            f"Received: missing {', '.join(missing)}. Install them with: {SUITE_INSTALL}",
            file=sys.stderr,
        )
        return 2
    try:
        if args.command in TENSORFLOW_COMMANDS:
            import_tensorflow_quietly()
        return COMMANDS[args.command](args)
    except KeyboardInterrupt as interrupt:  # a run's says which run and where it resumes
        print(f"keras-stability {args.command}: {str(interrupt) or 'interrupted'}", file=sys.stderr)
        return 130
    except OSError as error:  # a results or report directory that cannot be written or read
        where = error.filename if error.filename is not None else "(unknown path)"
        print(f"keras-stability {args.command}: {where}: {error.strerror or error}", file=sys.stderr)
        return 1


__all__ = ["build_parser", "expand", "load_all", "main", "print_problems"]
