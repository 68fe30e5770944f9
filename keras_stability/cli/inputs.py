"""Experiment files for the command line: paths expanded, every file loaded, problems printed."""

import glob
import os
import sys


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
    from keras_stability.config.loading import ConfigError, Location, Problem, load_experiment

    experiments, problems = [], []
    for path in paths:
        if os.path.isdir(path) and not expand([path]):
            problems.append(Problem(Location(path), None, "no experiment files (*.yaml) in this directory"))
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
