"""A run's identity: its resolved config.yaml text, and the part of it that decides its numbers.

`resolved_config_text` is what the runner writes into a run's directory; `what_the_run_trains` is
what it compares to decide whether a directory holds the same run (to skip or resume it) and what
`run_store.training_id` hashes to find the same training in another experiment.
"""

import pydantic
import yaml

from keras_stability.config.schema import RunConfig
from keras_stability.config.validation import field_annotation, unwrap

# Settings of the experiment as a whole: editing them (adding seeds, say) leaves finished runs valid.
EXPERIMENT_LEVEL = ("seeds", "description", "baseline")


# libyaml's safe loader where PyYAML has it: skipping a finished run reads its config.yaml six times,
# which took 0.1 s a run with the pure-Python one (a resumed suite walks every finished run).
CONFIG_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def resolved_config_text(config, variant, seed):
    document = {"experiment": config.name, "variant": variant, "seed": seed, "config": config.model_dump(mode="json")}
    return yaml.safe_dump(document, sort_keys=False)


def what_the_run_trains(config_text):
    """The parts of a config.yaml that decide the run's numbers (all but `EXPERIMENT_LEVEL`).

    The configuration is read through the current schema, so a config.yaml written before `model` and
    `dataset` became tagged unions (every model's keys in one flat mapping) compares equal when the
    keys its model and dataset use are the same: the keys they ignore are dropped first.
    """
    document = yaml.load(config_text, Loader=CONFIG_LOADER)
    config = {k: v for k, v in document["config"].items() if k not in EXPERIMENT_LEVEL}
    dataset = config.get("dataset") or {}
    if "adding_samples" in dataset and dataset.get("name") in ("mnist", "fashion_mnist") and dataset.get("train_size"):
        document["train_size_before_validation_split"] = True  # the flat schema's IDX loaders cut there
    config.update(
        {section: used_keys(section, config[section]) for section in ("model", "dataset") if section in config}
    )
    try:
        config = RunConfig.model_validate({**config, "name": document["experiment"]}).model_dump(mode="json")
    except pydantic.ValidationError:
        pass  # compared as written: it differs from every valid configuration
    document["config"] = {k: v for k, v in config.items() if k not in EXPERIMENT_LEVEL}
    return document


def used_keys(section, mapping):
    """`mapping` (a model or dataset section) without the keys its spec does not declare."""
    spec = unwrap(field_annotation(RunConfig.model_fields[section]), mapping)
    if spec is None or not isinstance(mapping, dict):
        return mapping
    return {key: value for key, value in mapping.items() if key in spec.model_fields}
