"""Whether the results in a run's directory may stand for the run asked for, or must be trained again.

A run's identity is its resolved configuration (`run_identity`) and the user code that configuration
names: the files of its model and dataset factories, whose SHA-256 meta.json records
(`factories.factory_provenance`). Results are never reused silently for other code or another
configuration: a run whose last attempt failed is trained with the new configuration, a run whose
factory code changed is trained again, and a directory holding another configuration's results is
refused with the command that retrains it (`--rerun`).
"""

import dataclasses

from keras_stability.runs.run_identity import what_the_run_trains
from keras_stability.runs.status import RunStatus

FACTORY_KINDS = ("model_factory", "dataset_factory")


@dataclasses.dataclass(frozen=True)
class Reuse:
    """What to do with a run directory's results: "reuse" them, "retrain" (from scratch) or "refuse"
    (leave them, the run fails); `reason` is the line the runner prints, None when reused."""

    action: str
    reason: str | None = None


def code_changes(recorded: dict, current: dict) -> list[str]:
    """How the factory code in `current` (`factory_provenance` now) differs from what `recorded`
    (a meta.json) trained with: one phrase per changed factory module."""
    changes = []
    for kind in FACTORY_KINDS:
        before, now = recorded.get(kind) or {}, current.get(kind) or {}
        if before.get("module_sha256") != now.get("module_sha256") or before.get("version") != now.get("version"):
            old, new = (str(side.get("module_sha256"))[:12] for side in (before, now))
            what = now.get("module_file") or before.get("module_file") or kind
            changes.append(f"{what}: SHA-256 {old}… → {new}…")
    return changes


def judge(label: str, existing_text: str, text: str, meta: dict, current_factories: dict) -> Reuse:
    """Whether the finished or interrupted run described by `existing_text` (its config.yaml) and
    `meta` (its meta.json) may stand for the run `text` describes, trained by `current_factories`."""
    if what_the_run_trains(existing_text) != what_the_run_trains(text):
        if meta.get("status") == RunStatus.FAILED:
            return Reuse("retrain", f"its last attempt failed ({meta.get('error')}); training the new configuration")
        return Reuse(
            "refuse",
            "holds a run of a different configuration; delete it, choose another --results directory, "
            f"or retrain it: keras-stability run FILE --rerun {label}",
        )
    changes = code_changes(meta, current_factories) if meta else []
    if changes:
        return Reuse("retrain", f"its factory code changed since it trained ({'; '.join(changes)}); training it again")
    return Reuse("reuse")
