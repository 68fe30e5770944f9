"""A sweep's runs shared by N workers through an Optuna study in a database: each trial is one run.

Every worker loads the same experiment file, opens the same study and, trial by trial, takes a run
that no trial holds yet (a trial holds its run, in user attribute `run`, while it is running, waiting
or complete) and runs it with the ordinary runner into the shared results directory. A killed worker's
trial stops beating; after the grace period the next worker that looks fails it, Optuna's retry
callback queues a copy holding the same run, a worker takes that copy first and the runner resumes
the run from its last checkpoint. A worker ends when every run of the sweep is held by a complete
trial: each run is finished exactly once, and no trial is left running.
"""

import dataclasses
import math
import time

import optuna

from keras_stability.experiments.database import DEFAULT_HEARTBEAT_S, POLL_S, open_storage, retry_dead_workers
from keras_stability.experiments.runner import run_one
from keras_stability.experiments.search import final_metric, open_study
from keras_stability.runs.key import RunKey

HOLDING = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: a cell (or unswept variant) and a seed."""

    variant: str
    seed: int
    config: object  # RunConfig

    @property
    def label(self):
        return RunKey(self.config.name, self.variant, self.seed).within_experiment


def sweep_runs(experiment) -> dict:
    """The experiment's runs by label, in the file's order."""
    runs = [SweepRun(variant, seed, config) for variant, seed, config in experiment.runs()]
    return {run.label: run for run in runs}


def held(trials, besides=None):
    """The runs held by `trials` (other than trial number `besides`)."""
    return {t.user_attrs["run"] for t in trials if t.state in HOLDING and "run" in t.user_attrs and t.number != besides}


def pick(study, trial, runs):
    """The run for a new trial: one no other trial holds, spread by trial number so that workers
    starting together rarely pick the same one. None when nothing is left."""
    taken = held(study.get_trials(deepcopy=False), besides=trial.number)
    free = [label for label in runs if label not in taken]
    return free[trial.number % len(free)] if free else None


def objective_for(study, runs, results_root, log, tally):
    def objective(trial):
        label = trial.user_attrs.get("run") or pick(study, trial, runs)
        if label is None or label not in runs:
            trial.set_user_attr("outcome", "idle")
            raise optuna.TrialPruned("no run left to take" if label is None else f"{label} is not a run of this file")
        trial.set_user_attr("run", label)
        others = [
            t for t in study.get_trials(deepcopy=False) if t.number != trial.number and t.user_attrs.get("run") == label
        ]
        # Two workers can pick one run at the same moment; the lower trial number keeps it.
        if any(t.state in HOLDING and t.number < trial.number for t in others):
            trial.set_user_attr("outcome", "duplicate")
            raise optuna.TrialPruned(f"{label}: taken by another worker")
        run = runs[label]
        outcome = run_one(results_root, run.config, run.variant, run.seed, log=log)
        tally[outcome] = tally.get(outcome, 0) + 1
        trial.set_user_attr("outcome", outcome)
        if outcome == "busy":  # another process trains it; it is taken again once that one ends or dies
            time.sleep(POLL_S)
            raise optuna.TrialPruned(f"{label}: another process is running it")
        finished_elsewhere = any(
            t.state == optuna.trial.TrialState.COMPLETE
            for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get("run") == label and t.number != trial.number
        )
        if outcome in ("skipped", "shared") and finished_elsewhere:
            trial.set_user_attr("outcome", "duplicate")
            raise optuna.TrialPruned(f"{label}: finished by another worker")
        if outcome == "failed":
            return 0.0
        value = final_metric(results_root, run.config.name, run.variant, run.seed, "val_accuracy")
        return value if math.isfinite(value) else 0.0  # a diverged run scores 0, as in the report

    return objective


def run_sweep_worker(experiment, results_root, url, study_name=None, heartbeat_s=DEFAULT_HEARTBEAT_S, log=print):
    """Works on the experiment's sweep study in the database at `url` until every run is finished.

    Returns:
        {outcome: count} of the runs this worker ran ("done", "diverged", "skipped", "shared", "failed", ...).

    Raises:
        StorageError: when the database cannot be opened (the message hides the password).
    """
    storage = open_storage(url, heartbeat_s)
    study = open_study(
        study_name or f"{experiment.name}-sweep", storage, optuna.samplers.RandomSampler(seed=0), "maximize"
    )
    runs = sweep_runs(experiment)
    tally = {}
    objective = objective_for(study, runs, results_root, log, tally)
    while True:
        retry_dead_workers(study)  # a dead worker's run goes back to the queue
        trials = study.get_trials(deepcopy=False)
        states = {t.state for t in trials}
        if set(runs) - held(trials) or optuna.trial.TrialState.WAITING in states:
            study.optimize(objective, n_trials=1, catch=(RuntimeError,))
        elif optuna.trial.TrialState.RUNNING in states:
            time.sleep(min(heartbeat_s, POLL_S))  # runs go on elsewhere; wait for them to finish or go stale
        else:
            return tally
