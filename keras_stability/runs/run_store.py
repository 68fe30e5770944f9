"""Shared runs: a training that another experiment has finished is linked into this one, not trained again.

Two runs are the same training when their resolved configurations agree on everything but the
experiment's name and its experiment-level settings (seed list, description, baseline), and their seed
is the same. That identity, `training_id` (a hash), is written into every run's meta.json, and
`results/.trainings/<training_id>` is a relative link to the run directory that trains it. A training
is newly shared only from a run of the same code and libraries (`same_code`): results committed by an
earlier version are trained again, not linked (a link an earlier version made stays).

A shared run's directory keeps the experiment's layout, `results/<experiment>/<variant>/seed-<n>/`,
with its own `config.yaml`, a `meta.json` copied from the trained run plus `shared_from` (the trained
run's directory, relative) and relative links to the trained run's `metrics.csv`, `steps.csv.gz` and
`timing.csv`: reports read it like any run, git stores three links, and a ledger counts one training
once by its `training_id`. The trained run's step log is compacted (`step_logs`) before it is linked,
so that no link names the steps.csv that compaction removes.

The index is derived data: each run's meta.json holds its `training_id`. An entry that is missing,
dangling or no longer a link (a tool that follows links, such as `shutil.copytree`, a zip or a synced
folder, copied the run into it) is rebuilt from the runs' meta.json files, never fatal; a shared run
whose links became copies is linked again.
"""

import hashlib
import json
import os
import shutil

import yaml

from keras_stability.factories import factory_provenance
from keras_stability.runs import sharpness_log, step_logs, storage
from keras_stability.runs.key import RunKey
from keras_stability.runs.provenance import process_provenance
from keras_stability.runs.run_identity import resolved_config_text, what_the_run_trains
from keras_stability.runs.run_reuse import code_changes
from keras_stability.runs.status import FINISHED_STATUSES, RunStatus

# Linked, never copied.
SHARED_FILES = ("metrics.csv", step_logs.COMPACT, "timing.csv", sharpness_log.SHARPNESS_FILE, "tensorboard")
# What a shared run's directory may hold besides: its link to steps.csv, made before compaction.
REPLACED_LINKS = (step_logs.PLAIN,)
INDEX = ".trainings"


def training_id(config_text: str) -> str:
    """The identity of the training a resolved config.yaml text describes (its seed included)."""
    document = what_the_run_trains(config_text)
    trained = {"config": {k: v for k, v in document["config"].items() if k != "name"}, "seed": document["seed"]}
    return hashlib.sha256(json.dumps(trained, sort_keys=True).encode()).hexdigest()[:20]


def same_code(meta: dict, factories: dict) -> bool:
    """Whether a run's meta.json names this process's code and libraries (git commit, dirty flag,
    versions, and the factory code `factories`, `factory_provenance` now): a training from another
    version of them may give other numbers, so it is not shared, and the index moves to the run this
    version trains."""
    ours = process_provenance()
    return (
        meta.get("git") == ours["git"]
        and meta.get("versions") == ours["versions"]
        and not code_changes(meta, factories)
    )


def readable_meta(directory):
    """The run's meta.json as a dict; None when there is none, False when it cannot be read."""
    try:
        meta = storage.read_json(os.path.join(directory, "meta.json"), None)
    except (OSError, ValueError):
        return False
    return meta if meta is None or isinstance(meta, dict) else False


def trains(directory, identity):
    """`directory`'s meta.json if it trained `identity` itself (not shared), else None."""
    meta = readable_meta(directory) or {}
    return meta if meta.get("training_id") == identity and "shared_from" not in meta else None


def trained_run(results_root, identity):
    """The directory that trains `identity` and its meta.json, or (None, {}) when there is none.

    The index entry is looked up first; where it is missing, dangling or not a link, the runs' own
    meta.json files are (`scanned_trainings`) and the entry is made again."""
    link = os.path.join(results_root, INDEX, identity)
    if os.path.islink(link):
        directory = os.path.normpath(os.path.join(os.path.dirname(link), os.readlink(link)))
        meta = trains(directory, identity)
        if meta is not None:
            return directory, meta
    for directory in scanned_trainings(results_root).get(identity, []):
        meta = trains(directory, identity)
        if meta is not None:
            claim(results_root, identity, directory)
            return directory, meta
    return None, {}


_SCANS = {}  # results root → {training_id: [directories]}: read once per process, verified on use


def scanned_trainings(results_root):
    """{training_id: run directories that trained it} from every meta.json under `results_root`
    (shared runs and the index left out), finished runs first."""
    root = os.path.abspath(results_root)
    if root not in _SCANS:
        found = {}
        for directory, subdirectories, files in os.walk(root):
            subdirectories[:] = [d for d in subdirectories if not d.startswith(".") and d != "tensorboard"]
            meta = readable_meta(directory) if "meta.json" in files else None
            if meta and meta.get("training_id") and "shared_from" not in meta:
                found.setdefault(meta["training_id"], []).append(
                    (meta.get("status") not in FINISHED_STATUSES, directory)
                )
        _SCANS[root] = {identity: [d for _, d in sorted(entries)] for identity, entries in found.items()}
    return _SCANS[root]


def remove_entry(path):
    """Removes what is at `path`, a link or what a tool that followed it left there (a copy)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def claim(results_root, identity, directory):
    """Points the index entry of `identity` at `directory` (atomically: a link is replaced, never half-written)."""
    index = os.path.join(results_root, INDEX)
    if os.path.lexists(index) and (os.path.islink(index) or not os.path.isdir(index)):
        remove_entry(index)  # the index itself replaced by a link or a file: rebuilt entry by entry
    os.makedirs(index, exist_ok=True)
    entry = os.path.join(index, identity)
    if os.path.lexists(entry) and not os.path.islink(entry):
        remove_entry(entry)  # a copy of the run that a link-following tool made: os.replace cannot replace it
    storage.atomic_symlink(os.path.relpath(directory, index), entry)


def link_to(directory, twin, twin_meta, config_text, identity, document):
    """Makes `directory` a shared copy of the finished run in `twin` (whose step log it compacts)."""
    os.makedirs(directory, exist_ok=True)
    step_logs.compact(twin)
    for name in (*SHARED_FILES, *REPLACED_LINKS):
        target = os.path.join(directory, name)
        remove_entry(target)  # a link, or the copy a link-following tool made of it
        if name in SHARED_FILES and os.path.exists(os.path.join(twin, name)):
            os.symlink(os.path.relpath(os.path.join(twin, name), directory), target)
    storage.atomic_write_text(os.path.join(directory, "config.yaml"), config_text)
    storage.atomic_write_json(
        os.path.join(directory, "meta.json"),
        {
            **twin_meta,
            "experiment": document["experiment"],
            "variant": document["variant"],
            "seed": document["seed"],
            "training_id": identity,
            "shared_from": os.path.relpath(twin, directory),
        },
    )


def unshare(directory):
    """Removes a shared copy whose trained run is gone or changed, so that the run trains here."""
    for name in (*SHARED_FILES, *REPLACED_LINKS, "meta.json", "config.yaml"):
        remove_entry(os.path.join(directory, name))


def holds_other_training(directory, config_text):
    try:
        with open(os.path.join(directory, "config.yaml"), encoding="utf-8") as stream:
            return what_the_run_trains(stream.read()) != what_the_run_trains(config_text)
    except FileNotFoundError:
        return False
    except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError):  # UnicodeDecodeError is a ValueError
        return True  # a damaged config.yaml is the runner's to report


def share_finished_run(results_root, config, variant, seed, log=print) -> bool:
    """Links the run to the same training finished by another experiment; True when it did (or had).

    Otherwise records the `training_id` of an existing run that lacks it in its meta.json (the runner
    writes it into a new run's) and, unless
    another run already trains it, makes this directory the one the index points to; returns False and
    the runner trains, resumes or skips the run as usual.
    """
    key = RunKey(config.name, variant, seed)
    directory = key.directory(results_root)
    text = resolved_config_text(config, variant, seed)
    identity = training_id(text)
    factories = factory_provenance(config)
    with storage.run_lock(directory) as locked:
        if not locked:
            return False  # another process runs it; the runner says so
        meta_path = os.path.join(directory, "meta.json")
        meta = readable_meta(directory)
        if meta is False:
            return False  # a damaged meta.json is the runner's to report
        if meta is not None and "shared_from" not in meta and holds_other_training(directory, text):
            return False  # the runner refuses the directory
        twin, twin_meta = trained_run(results_root, identity)
        label = key.label
        finished = twin is not None and twin_meta.get("status") in FINISHED_STATUSES
        already_shared = meta is not None and "shared_from" in meta
        # A link made by an earlier version stays: that version judged the two the same training.
        shareable = finished and (already_shared or same_code(twin_meta, factories))
        if already_shared and not shareable:
            log(f"{label}: the run it shared ({meta['shared_from']}) is gone or changed; training it here")
            unshare(directory)
            meta = None
        if shareable and (meta is None or already_shared):
            link_to(
                directory,
                twin,
                twin_meta,
                text,
                identity,
                {"experiment": config.name, "variant": variant, "seed": seed},
            )
            if meta is None:
                log(f"{label}: the same training finished in {os.path.relpath(twin, results_root)}; shared")
            return True
        if meta is not None and meta.get("training_id") != identity:  # a run from before training ids
            storage.atomic_write_json(meta_path, {**meta, "training_id": identity})
        if twin is None or (
            twin != os.path.normpath(directory)
            and (
                twin_meta.get("status") not in (*FINISHED_STATUSES, RunStatus.RUNNING)
                or not same_code(twin_meta, factories)
            )
        ):
            claim(results_root, identity, directory)
        return False
