"""Hyper-parameter search with Optuna: samplers, shared storage, pruning, results in the runs layout.

Each trial resolves the searched variant with the trial's parameters, runs it for every search seed
through the ordinary runner (into `results/<experiment>-<study>/trial-<n>/seed-<s>/`, so `report`
compares trials like variants), and returns the mean final validation metric. Several processes or
machines given the same storage and study name share one study; rerunning continues it.

Trial n draws its parameters with the sampler seeded by (`sampler_seed`, n): workers sharing a study
hold different trial numbers, so they never repeat each other's draws, and a study run by one worker
is reproducible. A trial whose worker was killed is failed after the heartbeat's grace period and
retried once more under its first trial's directory, where the runner resumes it (database storage
only; see `database`).
"""

import math
import os
import time

import numpy as np
import optuna

from keras_stability.config.credentials import storage_url
from keras_stability.config.loading import ConfigError
from keras_stability.config.overrides import apply_overrides
from keras_stability.config.schema import RunConfig, SearchConfig, with_sampler_document
from keras_stability.config.validation import validate
from keras_stability.experiments.database import (
    DEFAULT_HEARTBEAT_S,
    POLL_S,
    open_storage,
    retried,
    retry_dead_workers,
)
from keras_stability.experiments.runner import METRIC_COLUMNS, run_one
from keras_stability.runs.key import RunKey
from keras_stability.runs.storage import read_csv_rows, read_json

FINISHED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def sampler_factory(search):
    """A function from a seed to a new sampler of the kind `search` asks for (not grid)."""
    startup = {} if search.startup_trials is None else {"n_startup_trials": search.startup_trials}
    if search.sampler == "random":
        return lambda seed: optuna.samplers.RandomSampler(seed=seed)
    if search.sampler == "tpe":
        return lambda seed: optuna.samplers.TPESampler(seed=seed, **startup)
    try:
        import torch  # noqa: F401  (Optuna's GPSampler is built on PyTorch)
    except ImportError:
        raise RuntimeError(
            "sampler 'gp' needs PyTorch: pip install 'keras-stability[gp]' (or pip install torch)"
        ) from None
    return lambda seed: optuna.samplers.GPSampler(seed=seed, **startup)


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Draws trial n with a fresh sampler seeded by (seed, n); `base` is the sampler of the current trial.

    One seed for every worker made two workers on one study draw the same parameters (trials 4-6
    repeated trials 0-2); the trial number is unique in a study, so seeding by it cannot repeat.
    """

    def __init__(self, build, seed):
        self.build, self.seed = build, seed
        self.base = build(seed)

    def trial_seed(self, number):
        return int(np.random.SeedSequence([self.seed, number]).generate_state(1)[0])

    def before_trial(self, study, trial):
        self.base = self.build(self.trial_seed(trial.number))
        self.base.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values):
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self):
        self.base.reseed_rng()


def make_sampler(search):
    if search.sampler == "grid":
        # The grid sampler already gives trial n the n-th point of its seeded shuffle: workers do not
        # repeat each other (and a new shuffle per trial would).
        grid = {name: spec.grid() for name, spec in search.space.items()}
        return optuna.samplers.GridSampler(grid, seed=search.sampler_seed)
    return TrialSeededSampler(sampler_factory(search), search.sampler_seed)


def make_storage(url, default_path, heartbeat_s=DEFAULT_HEARTBEAT_S):
    """A database (with heartbeats, so killed workers' trials are retried); otherwise an Optuna journal
    file, which needs no server."""
    if url:
        return open_storage(url, heartbeat_s)
    os.makedirs(os.path.dirname(default_path), exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(default_path))


def finished_trials(study):
    """Trials that count against the budget: finished ones, less those failed and then retried."""
    trials = study.get_trials(deepcopy=False)
    retried = {number for trial in trials for number in trial.system_attrs.get("retry_history", [])}
    return [t for t in trials if t.state in FINISHED_STATES and t.number not in retried]


def suggest(trial, name, spec):
    if spec.type == "categorical":
        return trial.suggest_categorical(name, spec.choices)
    if spec.type == "int":
        return trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log)
    return trial.suggest_float(name, spec.low, spec.high, log=spec.log)


def trial_config(experiment, search, parameters, study):
    source = experiment.sources[search.variant or experiment.baseline]
    data = apply_overrides(source, [(tuple(k.split(".")), v) for k, v in parameters.items()])
    data["name"] = f"{experiment.name}-{study}"
    return validate(RunConfig, data, [((), {})])


def objective_for(experiment, search, study_name, results_root, log):
    maximize = search.objective == "val_accuracy"
    seeds = search.seeds or experiment.variants[search.variant or experiment.baseline].seeds

    def objective(trial):
        parameters = {name: suggest(trial, name, spec) for name, spec in search.space.items()}
        try:
            config = trial_config(experiment, search, parameters, study_name)
        except ConfigError as error:
            raise optuna.TrialPruned(f"invalid parameters: {error.lines[0]}") from None
        # A retried trial carries its first attempt's user attributes: it resumes that directory.
        variant = trial.user_attrs.get("variant", f"trial-{trial.number:04d}")
        trial.set_user_attr("variant", variant)
        scores = []
        for index, seed in enumerate(seeds):

            def on_epoch(epoch, values, first=index == 0):
                exploded = search.prune_grad_norm is not None and values["grad_norm"] > search.prune_grad_norm
                if exploded or not math.isfinite(values["train_loss"]):
                    trial.set_user_attr("diverged", True)
                    return (
                        f"gradient norm {values['grad_norm']:.3g} > {search.prune_grad_norm:g}"
                        if exploded
                        else "non-finite loss"
                    )
                if first:
                    trial.report(values[search.objective], epoch)
                    # Pruning after the last epoch saves nothing and loses the trial's value.
                    if epoch < config.training.epochs and trial.should_prune():
                        return "below the median of earlier trials"
                return None

            outcome = run_one(results_root, config, variant, seed, log=log, on_epoch=on_epoch)
            if outcome == "shared":  # the same training, finished by another experiment or trial
                directory = RunKey(config.name, variant, seed).directory(results_root)
                outcome = read_json(os.path.join(directory, "meta.json"), {}).get("status")
            if outcome in ("diverged", "pruned"):
                trial.set_user_attr("outcome", outcome)
                if outcome == "diverged":
                    trial.set_user_attr("diverged", True)
                raise optuna.TrialPruned(f"{RunKey(config.name, variant, seed).within_experiment} {outcome}")
            if outcome not in ("done", "skipped"):
                raise RuntimeError(f"{RunKey(config.name, variant, seed).within_experiment}: run {outcome}")
            scores.append(final_metric(results_root, config.name, variant, seed, search.objective))
        value = sum(scores) / len(scores)
        trial.set_user_attr("seeds", list(seeds))
        return value if math.isfinite(value) else (-math.inf if maximize else math.inf)

    return objective


def final_metric(results_root, experiment, variant, seed, column):
    rows = read_csv_rows(os.path.join(RunKey(experiment, variant, seed).directory(results_root), "metrics.csv"))
    return float(rows[-1][METRIC_COLUMNS.index(column)])


def open_study(name, storage, sampler, direction, attempts=4):
    """Creates or joins a study. Workers starting together can race to create the database tables;
    the loser gets an SQL error and simply tries again."""
    import sqlalchemy.exc

    def study():
        return optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler,
            direction=direction,
            load_if_exists=True,
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        )

    return retried(study, sqlalchemy.exc.SQLAlchemyError, attempts)


def with_sampler(search, sampler):
    """`search` with another sampler, validated again (the grid sampler needs `values`)."""
    return SearchConfig.model_validate(with_sampler_document(search, sampler))


def run_search(
    experiment,
    results_root,
    storage=None,
    study_name=None,
    trials=None,
    sampler=None,
    log=print,
    heartbeat_s=DEFAULT_HEARTBEAT_S,
):
    """Runs (or joins, or continues) the experiment's study until it holds `trials` finished trials.

    `storage` is a database URL (else $KERAS_STABILITY_STORAGE, else the file's `search.storage`, else a
    journal file under the results); `sampler` replaces the file's `search.sampler`. With a database, a
    worker that reaches the budget waits for the trials still running elsewhere and retries those whose
    worker died. Returns the `optuna.Study`.
    """
    search = experiment.search
    if search is None:
        raise ValueError(f"{experiment.path} has no `search:` section")
    if sampler is not None:
        search = with_sampler(search, sampler)
    study_name = study_name or search.study
    journal = os.path.join(results_root, f"{experiment.name}-{study_name}", "optuna-journal.log")
    storage = make_storage(storage_url(storage, search.storage), journal, heartbeat_s)
    # Only a database records heartbeats; in a journal file a killed trial stays RUNNING, unwaited for.
    watched = isinstance(storage, optuna.storages.RDBStorage)
    study = open_study(
        study_name,
        storage,
        make_sampler(search),
        "maximize" if search.objective == "val_accuracy" else "minimize",
    )
    budget = trials or search.trials
    if search.sampler == "grid":
        grid_size = math.prod(len(spec.grid()) for spec in search.space.values())
        budget = min(budget, grid_size)
    finished = len(finished_trials(study))
    if finished >= budget and not (watched and unsettled(study)):
        log(f"study {study_name}: {finished} trials finished already (budget {budget})")
        return study
    log(f"study {study_name}: {finished}/{budget} trials finished; running the rest")
    objective = objective_for(experiment, search, study_name, results_root, log)

    def stop_at_budget(study, trial):
        if len(finished_trials(study)) >= budget:
            study.stop()

    started = time.monotonic()
    while True:
        remaining = None if search.timeout_s is None else search.timeout_s - (time.monotonic() - started)
        if remaining is not None and remaining <= 0:
            break
        if len(finished_trials(study)) < budget or waiting(study):
            study.optimize(
                objective,
                callbacks=[stop_at_budget],
                timeout=remaining,
                catch=(RuntimeError,),
                n_trials=None if len(finished_trials(study)) < budget else len(waiting(study)),
            )
        elif watched and unsettled(study):
            time.sleep(min(heartbeat_s, POLL_S))  # trials run elsewhere; a dead worker's go stale and come back
            retry_dead_workers(study)
        else:
            break
    return study


def waiting(study):
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))


def unsettled(study):
    """Whether trials of `study` still run somewhere (or wait to be retried)."""
    return bool(
        study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING))
    )
