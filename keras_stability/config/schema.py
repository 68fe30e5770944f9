"""The experiment file's schema: every section strict, every name checked, every range bounded.

`model` and `dataset` are tagged unions keyed on `name` (see `sections`): each takes only the keys
its model or dataset uses. `dataset.train_size` keeps the first N examples of the training split
after the fixed test and validation splits, for every dataset that has it, so the validation and
test sets never depend on it. `seeds` are unique and within 0 ≤ seed < 2**32 (numpy's seeding, which
`keras.utils.set_random_seed` calls); experiment, variant and study names are directory names that
cannot start with a dot, so a run always lands inside `results/<experiment>/`.
"""

import re
import urllib.parse
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, PositiveFloat, field_validator, model_validator

from keras_stability.config.credentials import mask_password
from keras_stability.config.sections import (
    DATASET_SPECS,
    MODEL_SPECS,
    DatasetConfig,
    ModelConfig,
    is_builtin,
)
from keras_stability.config.strict import PositiveCount, Strict, count
from keras_stability.config.transform_specs import StabilizerConfig


def directory_name(name):
    # Names become directories under results/<experiment>/: no leading dot, so neither `.` nor `..`.
    if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}", name):
        raise ValueError(
            "a name becomes a directory under results/: up to 100 letters, digits, `_`, `-` and `.`, "
            f"not starting with `.`. Received: {name!r}"
        )
    return name


Name = Annotated[str, AfterValidator(directory_name)]
# numpy's legacy seeding (`np.random.seed`, called by `keras.utils.set_random_seed`) takes 0 ≤ seed < 2**32.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


def unique(seeds):
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise ValueError(
            f"seeds must be unique: each seed is one run directory. Received: {seeds} (repeated: {repeated})"
        )
    return seeds


Seeds = Annotated[list[Seed], Field(min_length=1), AfterValidator(unique)]


class ScheduleConfig(Strict):
    """`warmup_steps` > 0 ramps a constant rate up linearly over that many steps (Gilmer et al. 2022)."""

    name: Literal["constant", "cosine"] = "constant"
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.0
    warmup_steps: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def warmup_is_for_a_constant_rate(self):
        if self.warmup_steps and self.name != "constant":
            raise ValueError(
                f"warmup_steps applies to the constant schedule only. Received: name={self.name!r}, "
                f"warmup_steps={self.warmup_steps}"
            )
        return self


class OptimizerConfig(Strict):
    name: Literal["sgd", "adam", "adagrad", "rmsprop"] = "sgd"
    learning_rate: PositiveFloat = 0.01
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    nesterov: bool = False
    schedule: ScheduleConfig = ScheduleConfig()

    @model_validator(mode="after")
    def momentum_is_for_sgd(self):
        if self.name != "sgd" and (self.momentum or self.nesterov):
            raise ValueError(f"momentum and nesterov apply to sgd only, not {self.name}")
        return self


class SharpnessConfig(Strict):
    """Opt-in curvature telemetry: the loss Hessian's top eigenvalue (`top_hessian_eigenvalue`, Adam's
    preconditioned one for Adam) on the first `examples` training examples, before the first epoch
    and after every `every_epochs` epochs, by `iterations` Hessian-vector products at most."""

    examples: PositiveCount = 1000
    iterations: PositiveCount = 20
    every_epochs: PositiveCount = 1


class TrainingConfig(Strict):
    """`batch_size` is the global batch: under `distribute` each of N replicas gets batch_size / N."""

    epochs: PositiveCount = 5
    batch_size: PositiveCount = 100
    jit_compile: bool = False
    steps_per_execution: PositiveCount | Literal["auto"] = "auto"
    stop_on_divergence: bool = True
    distribute: Literal["none", "mirrored", "multi_worker"] = "none"
    logical_cpus: count(0) = 0
    sharpness: SharpnessConfig | None = None

    @model_validator(mode="after")
    def fits_the_devices(self):
        if self.distribute == "multi_worker":
            raise ValueError(
                "multi-worker training was removed: MultiWorkerMirroredStrategy must exist before TensorFlow's "
                "first op, which a process training many runs cannot promise; use distribute: mirrored on one "
                "machine, and `keras-stability sweep` or `search` workers to spread runs over machines"
            )
        if self.distribute != "none" and self.steps_per_execution not in ("auto", 1):
            raise ValueError(
                "steps_per_execution > 1 with distribute fails inside TensorFlow (the cross-replica "
                "merge cannot run in Keras's multi-step loop); use auto or 1"
            )
        if self.jit_compile and self.distribute != "none":
            raise ValueError(
                "jit_compile with distribute fails inside TensorFlow (XLA cannot reach variables on the "
                "other replicas' devices); set jit_compile: false"
            )
        if self.sharpness is not None and self.distribute != "none":
            raise ValueError(
                "sharpness is measured on one device only (outside the distribution strategy); "
                "set distribute: none or leave sharpness out"
            )
        return self


# The built-in datasets whose inputs only one zoo model takes (sequences of two features; token ids).
MODEL_OF_DATASET = {"adding_problem": "rnn", "zipf_tokens": "embedding_bag"}


class RunConfig(Strict):
    """One fully resolved run: the base with one variant's overrides applied."""

    name: Name
    description: str = ""
    seeds: Seeds = [0]
    baseline: str | None = None
    dataset: DatasetConfig = DATASET_SPECS["mnist_small"]()
    model: ModelConfig = MODEL_SPECS["mlp"]()
    optimizer: OptimizerConfig = OptimizerConfig()
    stabilizer: StabilizerConfig | None = None
    training: TrainingConfig = TrainingConfig()

    @model_validator(mode="after")
    def task_fits_model(self):
        if not (is_builtin(self.dataset) and is_builtin(self.model)):
            return self  # a factory's shapes are known only when it is called
        for dataset, model in MODEL_OF_DATASET.items():
            if (self.dataset.name == dataset) != (self.model.name == model):
                raise ValueError(
                    f"model {self.model.name!r} does not fit dataset {self.dataset.name!r}: "
                    f"{dataset} needs model {model}, and {model} needs {dataset}"
                )
        if self.model.name == "embedding_bag" and self.model.vocabulary < self.dataset.vocabulary:
            raise ValueError(
                f"the embedding's vocabulary must cover the dataset's ids. Received: model.vocabulary="
                f"{self.model.vocabulary} < dataset.vocabulary={self.dataset.vocabulary}"
            )
        return self


class ParameterSpec(Strict):
    """One searched setting: a float or int range (`log` for log-uniform) or categorical `choices`.

    The grid sampler needs `values` (the grid points) on float and int parameters.
    """

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[str | int | float | bool] | None = None
    values: list[int | float] | None = None

    @model_validator(mode="after")
    def consistent(self):
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs `choices`")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.type} parameter needs `low` < `high`")
        elif self.log and self.low <= 0:
            raise ValueError("`log: true` needs `low` > 0")
        return self

    def grid(self):
        return self.choices if self.type == "categorical" else self.values


MODEL_BASED_SAMPLERS = ("tpe", "gp")


class SearchConfig(Strict):
    """Hyper-parameter search over the base (or `variant`) configuration with Optuna."""

    study: Name = "search"
    variant: str | None = None
    sampler: Literal["grid", "random", "tpe", "gp"] = "tpe"
    sampler_seed: int = 0
    trials: PositiveCount = 20
    # Random trials before a model-based sampler (tpe, gp) starts modelling; Optuna's default is 10.
    startup_trials: PositiveCount | None = None
    timeout_s: PositiveFloat | None = None
    seeds: Seeds | None = None
    objective: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    space: Annotated[dict[str, ParameterSpec], Field(min_length=1)]
    prune_grad_norm: PositiveFloat | None = 1e6
    storage: str | None = None

    @field_validator("storage")
    @classmethod
    def no_password_in_the_file(cls, url):
        if url is not None and urllib.parse.urlsplit(url).password is not None:
            raise ValueError(
                "a database password does not belong in an experiment file. Received: "
                f"{mask_password(url)}. Drop the password and give it through PGPASSWORD or ~/.pgpass, "
                "or give the whole URL through KERAS_STABILITY_STORAGE or --storage"
            )
        return url

    @model_validator(mode="after")
    def startup_trials_are_for_model_based_samplers(self):
        if self.startup_trials is not None and self.sampler not in MODEL_BASED_SAMPLERS:
            raise ValueError(
                f"startup_trials applies to the model-based samplers ({', '.join(MODEL_BASED_SAMPLERS)}); "
                f"the {self.sampler} sampler has no start-up phase. Received: startup_trials={self.startup_trials}"
            )
        return self

    @model_validator(mode="after")
    def grid_has_points(self):
        if self.sampler == "grid":
            missing = [name for name, spec in self.space.items() if not spec.grid()]
            if missing:
                raise ValueError(f"the grid sampler needs `values` for {', '.join(missing)}")
        return self


def with_sampler_document(search: SearchConfig, sampler: str) -> dict:
    """`search` as a document with another sampler (`--sampler`), to validate again: the start-up
    trials stay with a model-based sampler and are dropped for grid or random, which have none."""
    startup = search.startup_trials if sampler in MODEL_BASED_SAMPLERS else None
    return {**search.model_dump(), "sampler": sampler, "startup_trials": startup}


class ExperimentFile(RunConfig):
    """The top level of an experiment file; `variants` maps names to partial overrides of the base."""

    variants: dict[Name, dict] = {}
    search: SearchConfig | None = None
    sweep: "SweepConfig | None" = None


def distinct(values):
    repeated = [value for index, value in enumerate(values) if value in values[:index]]
    if repeated:
        raise ValueError(f"sweep values must differ. Received: {values} (repeats {repeated[0]!r})")
    return values


class SweepConfig(Strict):
    """A grid over dotted settings (list items by index, as in `search.space`), crossed with every
    variant (or those in `variants`) and every seed: each combination of values is one sweep cell."""

    grid: Annotated[dict[str, Annotated[list[Any], Field(min_length=1), AfterValidator(distinct)]], Field(min_length=1)]
    variants: Annotated[list[str], Field(min_length=1)] | None = None


ExperimentFile.model_rebuild()
