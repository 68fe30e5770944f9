"""keras-stability: gradient transforms, an optimizer wrapper and a Keras model for stable training.

Everything exported here needs only TensorFlow, Keras and NumPy (`pip install keras-stability`); the
experiment engine, search, reports and `results` need the `suite` extra.

The library is importable from here; submodules load on first use, so the command line can configure
TensorFlow's logging before TensorFlow starts:

    from keras_stability import StabilizedOptimizer, stabilize, clip_by_global_norm, chain, zclip

Where each capability lives:

- `transforms/`: the gradient transforms and `chain`; `nonfinite`: the non-finite policies; `spikes`:
  spike skipping (`skip_spikes`); `rollback`: `RollbackOnSpike`; `optimizer`: `StabilizedOptimizer`
  (`optimizer_arguments`: what it refuses; `inner_step`: the wrapped optimizer's own `apply` steps, in
  Keras's order); `model`: `StabilizedModel`, `stabilize`; `step_log`,
  `callbacks`: telemetry; `sharpness`: curvature telemetry (`top_hessian_eigenvalue`,
  `SharpnessMonitor`); `epoch_loop`: `train_epoch`, an epoch as one graph execution without `tf.data`;
- `datasets/`: IDX reading, the embedded `mnist_small`, the dataset registry (`Splits`, `Task`);
- `factories`: your own model and data, named as `module:function` in a file or registered by an
  installed package (entry points), and the contract they are called with;
- `config/`: experiment files (`schema`, `loading`; `sections`: the model and dataset sections,
  tagged unions on `name`; `yaml_files`: safe YAML and located errors; `validation`: located,
  explained problems; `overrides`: variants and `--set`; `sweep`: sweep grids; `credentials`: a
  database URL's password; `columns`: a configuration as flat `config.*` names; `transform_specs`:
  the `stabilizer` section);
- `runs/`: the results store: where a run lies (`key`: `RunKey`, `find_run_directories`), crash-safe
  files (`storage`), a run's files read and checked (`readers`, `run_files`; the report reads through
  `integrity`), an epoch's rows (`epoch_record`), when a run diverged (`divergence`), a run's identity
  (`run_identity`, `run_reuse`), runs shared between experiments (`run_store`), where a run came from
  (`provenance`), TensorBoard event files (`event_log`), a finished run's steps.csv gzipped and
  thinned (`step_logs`, `step_thinning`), a run's status (`status`: `RunStatus`), its sharpness
  measurements (`sharpness_log`);
- `experiments/`: running them: the model zoo (`zoo`), a compiled model from a configuration
  (`training`), models and data kept between runs (`run_cache`), one run (`runner`; `curvature`: its
  sharpness telemetry), all runs
  (`suite`), hyper-parameter search (`search`), sweep workers on a shared database (`sweep_workers`,
  `database`), reruns compared with committed runs (`verify`);
- `results` (the suite's Python face, not exported here: it needs the `suite` extra): runs as pandas
  DataFrames (`load_runs`, `load_steps`), a report's summary.json and the claims ledger as typed
  records (`read_summary`, `read_ledger`);
- `report/`: reading runs (`collect`), outcomes and sweep groups (`outcomes`), statistics over seeds
  (`statistics`), per-variant tables (`summary`), the stability boundary (`boundary`), the tuned
  comparison (`tuned`), the threshold trade-off (`tradeoff`), one experiment's analyses
  (`analyses`), run commits and claim registration (`provenance`), the claims ledger (`claims`),
  plots (`plots`, `analysis_plots`), pages from Jinja2 templates (`templates`, `render`), every report
  at once (`build`: `build_reports`), an Optuna study's report (`search_report`); `cli`: the
  `keras-stability` command (`cli.studies`: search and sweep; `cli.inputs`: reading experiment files;
  `demo`: its end-to-end training run).
"""

import importlib
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

_EXPORTS = {
    "GradientNormLogger": "keras_stability.callbacks",
    "train_epoch": "keras_stability.epoch_loop",
    "StabilizedModel": "keras_stability.model",
    "TELEMETRY": "keras_stability.model",
    "stabilize": "keras_stability.model",
    "NONFINITE_POLICIES": "keras_stability.nonfinite",
    "NonFiniteGradientError": "keras_stability.nonfinite",
    "nonfinite_errors": "keras_stability.nonfinite",
    "GradientStats": "keras_stability.optimizer",
    "StabilizedOptimizer": "keras_stability.optimizer",
    "GlobalNormTransform": "keras_stability.transforms",
    "GradientTransform": "keras_stability.transforms",
    "adagc": "keras_stability.transforms",
    "adaptive_clip": "keras_stability.transforms",
    "autoclip": "keras_stability.transforms",
    "chain": "keras_stability.transforms",
    "clip_by_global_norm": "keras_stability.transforms",
    "clip_by_norm": "keras_stability.transforms",
    "clip_by_value": "keras_stability.transforms",
    "global_norm": "keras_stability.transforms",
    "normalize_gradient": "keras_stability.transforms",
    "zclip": "keras_stability.transforms",
    "clip_by_l1_norm": "keras_stability.transforms",
    "regularize_gradient": "keras_stability.transforms",
    "quantized_ema_clip": "keras_stability.transforms",
    "mnist_small": "keras_stability.datasets",
    "RollbackOnSpike": "keras_stability.rollback",
    "SharpnessMonitor": "keras_stability.sharpness",
    "SkipStreakError": "keras_stability.spikes",
    "SpikeSkipping": "keras_stability.spikes",
    "skip_spikes": "keras_stability.spikes",
    "adam_preconditioner": "keras_stability.sharpness",
    "stability_limit": "keras_stability.sharpness",
    "top_hessian_eigenvalue": "keras_stability.sharpness",
}
_RENAMED = {"NONFINITE_POLICIES": "POLICIES"}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'keras_stability' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
