"""Hyper-parameter search with Optuna: samplers, shared storage, pruning, results in the runs layout.

Each trial resolves the searched variant with the trial's parameters, runs it for every search seed
through the ordinary runner (into `results/<experiment>-<study>/trial-<n>/seed-<s>/`, so `report`
compares trials like variants), and returns the mean final validation metric. Several processes or
machines given the same storage and study name share one study; rerunning continues it.
"""

import math
import os
import time

import optuna

from keras_stability.experiments.loading import ConfigError, apply_overrides, validate
from keras_stability.experiments.runner import METRIC_COLUMNS, run_one
from keras_stability.experiments.storage import read_csv_rows, run_directory
from keras_stability.experiments.schema import RunConfig, SearchConfig

FINISHED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def make_sampler(search):
    if search.sampler == "grid":
        return optuna.samplers.GridSampler({name: spec.grid() for name, spec in search.space.items()}, seed=search.sampler_seed)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=search.sampler_seed)
    if search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=search.sampler_seed)
    try:
        import torch  # noqa: F401  (Optuna's GPSampler is built on PyTorch)
    except ImportError:
        raise RuntimeError("sampler 'gp' needs PyTorch: pip install 'keras-stability[gp]' (or pip install torch)") from None
    return optuna.samplers.GPSampler(seed=search.sampler_seed)


def make_storage(url, default_path):
    """A database URL as given; otherwise an Optuna journal file, which needs no server."""
    if url:
        return url
    os.makedirs(os.path.dirname(default_path), exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(default_path))


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
        variant = f"trial-{trial.number:04d}"
        scores = []
        for index, seed in enumerate(seeds):

            def on_epoch(epoch, values, first=index == 0):
                exploded = search.prune_grad_norm is not None and values["grad_norm"] > search.prune_grad_norm
                if exploded or not math.isfinite(values["train_loss"]):
                    trial.set_user_attr("diverged", True)
                    return f"gradient norm {values['grad_norm']:.3g} > {search.prune_grad_norm:g}" if exploded else "non-finite loss"
                if first:
                    trial.report(values[search.objective], epoch)
                    # Pruning after the last epoch saves nothing and loses the trial's value.
                    if epoch < config.training.epochs and trial.should_prune():
                        return "below the median of earlier trials"
                return None

            outcome = run_one(results_root, config, variant, seed, log=log, on_epoch=on_epoch)
            if outcome in ("diverged", "pruned"):
                trial.set_user_attr("outcome", outcome)
                if outcome == "diverged":
                    trial.set_user_attr("diverged", True)
                raise optuna.TrialPruned(f"{variant}/seed-{seed} {outcome}")
            if outcome not in ("done", "skipped"):
                raise RuntimeError(f"{variant}/seed-{seed}: run {outcome}")
            scores.append(final_metric(results_root, config.name, variant, seed, search.objective))
        value = sum(scores) / len(scores)
        trial.set_user_attr("seeds", list(seeds))
        return value if math.isfinite(value) else (-math.inf if maximize else math.inf)

    return objective


def final_metric(results_root, experiment, variant, seed, column):
    rows = read_csv_rows(os.path.join(run_directory(results_root, experiment, variant, seed), "metrics.csv"))
    return float(rows[-1][METRIC_COLUMNS.index(column)])


def open_study(name, storage, sampler, direction, attempts=4):
    """Creates or joins a study. Workers starting together can race to create the database tables;
    the loser gets an SQL error and simply tries again."""
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return optuna.create_study(
                study_name=name, storage=storage, sampler=sampler, direction=direction, load_if_exists=True,
                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
            )
        except sqlalchemy.exc.SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def with_sampler(search, sampler):
    """`search` with another sampler, validated again (the grid sampler needs `values`)."""
    return SearchConfig.model_validate({**search.model_dump(), "sampler": sampler})


def run_search(experiment, results_root, storage=None, study_name=None, trials=None, sampler=None, log=print):
    """Runs (or joins, or continues) the experiment's study until it holds `trials` finished trials.

    `sampler` replaces the file's `search.sampler`. Returns the `optuna.Study`.
    """
    search = experiment.search
    if search is None:
        raise ValueError(f"{experiment.path} has no `search:` section")
    if sampler is not None:
        search = with_sampler(search, sampler)
    study_name = study_name or search.study
    journal = os.path.join(results_root, f"{experiment.name}-{study_name}", "optuna-journal.log")
    study = open_study(
        study_name,
        make_storage(storage or search.storage, journal),
        make_sampler(search),
        "maximize" if search.objective == "val_accuracy" else "minimize",
    )
    budget = trials or search.trials
    if search.sampler == "grid":
        grid_size = math.prod(len(spec.grid()) for spec in search.space.values())
        budget = min(budget, grid_size)
    finished = len(study.get_trials(deepcopy=False, states=FINISHED_STATES))
    if finished >= budget:
        log(f"study {study_name}: {finished} trials finished already (budget {budget})")
        return study
    log(f"study {study_name}: {finished}/{budget} trials finished; running the rest")
    study.optimize(
        objective_for(experiment, search, study_name, results_root, log),
        callbacks=[optuna.study.MaxTrialsCallback(budget, states=FINISHED_STATES)],
        timeout=search.timeout_s,
        catch=(RuntimeError,),
    )
    return study
