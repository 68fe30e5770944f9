"""Running every (variant, seed) of one or more experiments, in one process or several."""

import concurrent.futures
import fnmatch
import multiprocessing
import os
import sys

from tqdm import tqdm

from keras_stability.experiments.runner import run_one
from keras_stability.runs.key import RunKey


def configure_threads(threads):
    """Fixes TensorFlow's thread pools (part of determinism); only possible before TF starts."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # TensorFlow already started in this process (e.g. in tests); it keeps its pools


def threads_per_job(jobs):
    return max(1, (os.cpu_count() or 1) // jobs)


def print_line(text):
    tqdm.write(text, file=sys.stdout)
    sys.stdout.flush()  # a log redirected to a file shows each epoch as it ends (`tail -f`)


def worker_run(arguments, tensorboard, rerun):
    results_root, config, variant, seed = arguments
    return run_one(
        results_root,
        config,
        variant,
        seed,
        log=lambda text: print(text, flush=True),
        tensorboard=tensorboard,
        rerun=rerun,
    )


def selected(label, patterns):
    """Whether a run's label (`RunKey.label`) matches one of the `--rerun` glob patterns."""
    return any(fnmatch.fnmatchcase(label, pattern) for pattern in patterns)


def task_key(task) -> RunKey:
    """The run of a (results_root, config, variant, seed) task."""
    return RunKey(task[1].name, task[2], task[3])


def unmatched(experiments, patterns):
    """The `--rerun` patterns that select no run of `experiments` (a typo would retrain nothing)."""
    labels = [RunKey(e.name, variant, seed).label for e in experiments for variant, seed, _ in e.runs()]
    return [pattern for pattern in patterns if not any(fnmatch.fnmatchcase(label, pattern) for label in labels)]


def run_experiments(experiments, results_root, jobs=1, show_progress=True, tensorboard=True, rerun=()):
    """Runs every run of `experiments` (a list of `Experiment`); returns {outcome: count}.

    With `jobs > 1` runs go to that many processes, each with cpus // jobs threads. Runs that are
    finished are skipped, runs that another process holds are left to it, interrupted ones resume.
    `tensorboard=False` writes no TensorBoard event files. Runs whose label matches a glob pattern
    of `rerun` (`selected`) are discarded and trained from scratch.
    """
    tasks = [
        (results_root, config, variant, seed)
        for experiment in experiments
        for variant, seed, config in experiment.runs()
    ]
    reruns = [selected(task_key(task).label, rerun) for task in tasks]
    outcomes = {}
    # Only on a terminal: redirected into a log, the bar's carriage returns garble it; the runner's
    # plain epoch lines say the same there.
    bar = tqdm(
        total=len(tasks),
        unit="run",
        desc="runs",
        disable=not show_progress or not sys.stderr.isatty(),
        file=sys.stderr,
        dynamic_ncols=True,
    )

    def record(task, outcome):
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        bar.set_postfix_str(f"{task_key(task).label}: {outcome}")
        bar.update()

    if jobs <= 1:
        configure_threads(threads_per_job(1))
        for task, again in zip(tasks, reruns):
            bar.set_postfix_str(f"{task_key(task).label}: running")
            record(task, run_one(*task, log=print_line, tensorboard=tensorboard, rerun=again))
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            jobs, mp_context=context, initializer=configure_threads, initargs=(threads_per_job(jobs),)
        ) as pool:
            futures = {pool.submit(worker_run, task, tensorboard, again): task for task, again in zip(tasks, reruns)}
            for future in concurrent.futures.as_completed(futures):
                record(futures[future], future.result())
    bar.close()
    return outcomes
