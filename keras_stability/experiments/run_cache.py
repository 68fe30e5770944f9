"""What one process keeps between runs: compiled models by training shape, and dataset splits.

A run's first epoch used to trace its epoch and evaluation functions anew (1–2 s for the doc-002
MLP, against 0.09 s for the epoch's steps), and to reload its dataset. Runs of one experiment that
differ only in their seed train the same graph, so the process keeps one compiled model per training
shape and re-initialises its variables for each run exactly as a fresh build would set them: the
model's weights and dropout seed states drawn anew from the run's seed, the optimizer's variables
(iterations, slots, the transform's state, the non-finite counter) set back to their initial values.
Results stay byte-identical whatever ran before in the process (tested).

Both caches hold a few entries, least recently used first out, so memory stays bounded however many
runs one process trains.
"""

import collections
import dataclasses
import json

import tensorflow as tf

from keras_stability.config.schema import DatasetConfig, RunConfig
from keras_stability.datasets import Task, load_dataset
from keras_stability.datasets.registry import SEED_INDEPENDENT
from keras_stability.experiments.training import compiled_model
from keras_stability.experiments.zoo import build_model
from keras_stability.factories import factory_provenance, is_factory_section, section_provenance
from keras_stability.model import StabilizedModel

MODELS_KEPT = 4
SPLITS_KEPT = 4


class LeastRecentlyUsed:
    """A dict of at most `capacity` entries that forgets the least recently used one."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.entries = collections.OrderedDict()

    def get(self, key, make):
        value = self.entries.pop(key) if key in self.entries else make()
        self.entries[key] = value
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
        return value

    def clear(self):
        self.entries.clear()


_MODELS = LeastRecentlyUsed(MODELS_KEPT)
_SPLITS = LeastRecentlyUsed(SPLITS_KEPT)


@dataclasses.dataclass(frozen=True)
class TrainingShape:
    """What decides a run's compiled graph (`key`), and the learning rate the run sets into it.

    `learning_rate` is the run's constant rate, which the graph reads from the optimizer's variable
    and which is therefore not in `key` (a learning-rate sweep trains one graph); None when the graph
    holds the rate itself (a schedule's), which `key` then includes.
    """

    key: str
    learning_rate: float | None


def training_shape(config: RunConfig, steps_per_epoch: int, task: Task) -> TrainingShape:
    """The run's `TrainingShape`: everything but its seed, experiment name and dataset, and a constant
    learning rate, decides its graph."""
    trained = config.model_dump(mode="json", include={"model", "optimizer", "stabilizer", "training"})
    schedule = config.optimizer.schedule
    rate = None
    if schedule.name == "constant" and not schedule.warmup_steps:
        rate = trained["optimizer"].pop("learning_rate")
    code = {kind: record["module_sha256"] for kind, record in factory_provenance(config).items()}  # edited code
    key = json.dumps([trained, code, steps_per_epoch, dataclasses.asdict(task)], sort_keys=True)
    return TrainingShape(key, rate)


class CachedModel:
    """A compiled `StabilizedModel` and the initial values of its optimizer's variables."""

    def __init__(self, config, steps_per_epoch, task, seed):
        self.model = compiled_model(config, steps_per_epoch, task, seed)
        # Built now, not in the first traced step, so that its initial state can be kept.
        self.model.optimizer.build(self.model.trainable_variables)
        self.initial_optimizer_state = [v.numpy() for v in self.model.optimizer.variables]
        self.fresh = True

    def reinitialise(self, config, task, seed, learning_rate):
        """Sets every variable as `compiled_model` would after `keras.utils.set_random_seed`, the
        learning rate to `learning_rate` unless it is None (`TrainingShape`)."""
        if self.fresh:  # just built from the run's seed and learning rate
            self.fresh = False
            return
        template = build_model(config.model, task, seed)
        for variable, value in zip(self.model.variables, template.variables, strict=True):
            variable.assign(value)
        for variable, value in zip(self.model.optimizer.variables, self.initial_optimizer_state, strict=True):
            variable.assign(value)
        if learning_rate is not None:
            self.model.optimizer.learning_rate = learning_rate
        self.model.reset_metrics()
        if self.model.step_log is not None:
            self.model.step_log.drain()  # rows a failed run left behind


def model_for_run(config: RunConfig, steps_per_epoch: int, task: Task, seed: int) -> StabilizedModel:
    """A compiled `StabilizedModel` for `config` in the state a new one would have (`seed`: the run's,
    which a model factory receives).

    Call `keras.utils.set_random_seed(seed)` first, as for `compiled_model`; under a distribution
    strategy, call it inside the strategy's scope.
    """
    shape = training_shape(config, steps_per_epoch, task)
    cached = _MODELS.get(shape.key, lambda: CachedModel(config, steps_per_epoch, task, seed))
    cached.reinitialise(config, task, seed, shape.learning_rate)
    return cached.model


class DeviceSplits:
    """A dataset's `Splits`, with its arrays also as tensors that stay on the device between runs."""

    def __init__(self, splits):
        self.splits = splits
        self.x_train, self.y_train = tf.convert_to_tensor(splits.x_train), tf.convert_to_tensor(splits.y_train)
        self.x_val, self.y_val = tf.convert_to_tensor(splits.x_val), tf.convert_to_tensor(splits.y_val)
        self.x_test, self.y_test = tf.convert_to_tensor(splits.x_test), tf.convert_to_tensor(splits.y_test)


def splits_for_run(dataset_config: DatasetConfig, seed: int) -> DeviceSplits:
    """The run's dataset, loaded once per dataset configuration (and seed, where it matters) and process."""
    # A factory section has no `name`: its data may depend on the seed, so it is loaded per seed.
    key = (
        dataset_config.model_dump_json(),
        section_provenance(dataset_config, "dataset")["module_sha256"] if is_factory_section(dataset_config) else None,
        None if getattr(dataset_config, "name", None) in SEED_INDEPENDENT else seed,
    )
    return _SPLITS.get(key, lambda: DeviceSplits(load_dataset(dataset_config, seed)))


def forget_everything():
    """Drops every cached model and dataset (for tests and memory measurements)."""
    _MODELS.clear()
    _SPLITS.clear()
