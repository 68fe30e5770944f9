"""Sweeps: a grid over dotted settings crossed with an experiment's variants, each cell a variant of its own.

A file's `sweep:` section

    sweep:
      variants: [no_clip, clip_1]            # optional: the variants the grid applies to (default: all)
      grid:
        optimizer.learning_rate: [0.01, 0.1, 0.5]
        stabilizer.transforms.0.max_norm: [0.5, 1.0]

turns each listed variant into one cell per combination of values, named
`<variant>/<key=value,...>` with each key shortened to the shortest dotted suffix that tells the keys
apart (`no_clip/learning_rate=0.1`). Cells are ordinary variants: the runner writes them to
`results/<experiment>/<variant>/<key=value,...>/seed-<n>/`, resumes and skips them like any run, and
each run's `config.yaml` holds the swept values in its resolved configuration. Variants the grid does
not apply to run once, as they are.
"""

import dataclasses
import hashlib
import itertools
import json
import re

from keras_stability.config.overrides import apply_overrides
from keras_stability.config.schema import RunConfig, SweepConfig
from keras_stability.config.validation import (
    field_annotation,
    locate,
    suggestion,
    tagged_members,
    unwrap,
    validate,
)
from keras_stability.config.yaml_files import ConfigError, Problem

# What a sweep may vary: the sections that decide what a run trains (not its name, seeds or description).
# The run's sections (a settings class, or a tagged union of them, as `model` and `dataset` are).
SWEPT_SECTIONS = tuple(
    name
    for name, field in RunConfig.model_fields.items()
    if isinstance(unwrap(field.annotation, None), type) or tagged_members(field_annotation(field))
)
SAFE_TEXT = re.compile(r"[A-Za-z0-9_.+-]+")
# A cell is named `<variant>/<key=value,...>`: file variant names cannot hold "/", so the first part is it.
CELL_SEPARATOR = "/"


def file_variant(name: str) -> str:
    """The experiment file's variant a run belongs to: itself, or the variant a sweep cell was made from."""
    return name.split(CELL_SEPARATOR, 1)[0]


@dataclasses.dataclass(frozen=True)
class SweepCell:
    """One combination of swept values applied to one of the file's variants."""

    variant: str
    settings: dict  # dotted key → value, in the grid's order
    name: str  # the cell's variant name (and directory below the experiment's)


def short_keys(keys):
    """Each dotted key → its shortest dotted suffix that is not also a suffix of another key."""
    short = {}
    for key in keys:
        parts = key.split(".")
        for length in range(1, len(parts) + 1):
            candidate = ".".join(parts[-length:])
            if not any(other != key and (other == candidate or other.endswith("." + candidate)) for other in keys):
                break
        short[key] = candidate
    return short


def value_text(value):
    """A value as it appears in a directory name: YAML's spelling for scalars, a short hash otherwise."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str) and SAFE_TEXT.fullmatch(value):
        return value
    return "h" + hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:10]


def sweep_cells(sweep: SweepConfig, variants) -> list[SweepCell]:
    """The cells of `sweep` over the file's `variants` (names, in file order), variant by variant."""
    short = short_keys(list(sweep.grid))
    cells = []
    for variant in variants:
        if sweep.variants is not None and variant not in sweep.variants:
            continue
        for values in itertools.product(*sweep.grid.values()):
            settings = dict(zip(sweep.grid, values, strict=True))
            label = ",".join(f"{short[key]}={value_text(value)}" for key, value in settings.items())
            cells.append(SweepCell(variant, settings, f"{variant}{CELL_SEPARATOR}{label}"))
    return cells


def key_path(key):
    return tuple(int(part) if part.isdigit() else part for part in key.split("."))


def grid_marks(sweep, marks, values):
    """A mark table that places each swept setting at its key (and value) under `sweep.grid` in the file."""
    table = {}
    for key, value in values.items():
        where = ("sweep", "grid", key)
        key_mark = marks.get(where, (None, None))[0]
        value_mark = marks.get(where + (sweep.grid[key].index(value),), (None, key_mark))[1]
        path = key_path(key)
        for length in range(len(path)):
            table.setdefault(path[:length], (key_mark, key_mark))
        table[path] = (key_mark, value_mark)
    return {path: mark for path, mark in table.items() if mark[0] is not None}


def check_keys(sweep, marks):
    errors = []
    for key in sweep.grid:
        if not re.fullmatch(r"[A-Za-z_]\w*(\.\w+)*", key) or key.split(".")[0] not in SWEPT_SECTIONS:
            where = locate(("sweep", "grid", key), [((), marks)], extra=True)
            errors.append(
                Problem(
                    where,
                    ("sweep", "grid", key),
                    "a sweep varies a dotted setting inside "
                    f"{', '.join(SWEPT_SECTIONS)}, e.g. optimizer.learning_rate. Received: {key!r}",
                )
            )
    return errors


def expand_sweep(sweep: SweepConfig, baseline: str, variants: dict, sources: dict, marks: dict):
    """The experiment's runs' configs by variant name with the swept variants replaced by their cells,
    and the baseline (its first cell when it is swept).

    Args:
        variants: the file's validated variants; sources: their merged, unvalidated mappings.

    Raises:
        ConfigError: one line per problem, at the key or value in the file's `sweep:` section.
    """
    errors = check_keys(sweep, marks)
    for index, name in enumerate(sweep.variants or []):
        if name not in sources:
            where = locate(("sweep", "variants", index), [((), marks)], extra=False)
            errors.append(
                Problem(where, ("sweep", "variants", index), f"no variant named {name!r}{suggestion(name, sources)}")
            )
    if errors:
        raise ConfigError(errors)
    cells = sweep_cells(sweep, list(variants))
    names = [cell.name for cell in cells]
    clash = next((name for index, name in enumerate(names) if name in names[:index]), None)
    if clash is not None:
        where = locate(("sweep", "grid"), [((), marks)], extra=False)
        raise ConfigError(
            [
                Problem(
                    where,
                    ("sweep", "grid"),
                    f"two cells would share the directory {clash!r}; "
                    "give values that read differently (1 and 1.0 do, true and 'true' do not)",
                )
            ]
        )
    configs, failing = {}, {}  # a problem → the variants it occurs in
    for variant, config in variants.items():
        own = [cell for cell in cells if cell.variant == variant]
        if not own:
            configs[variant] = config
        for cell in own:
            try:
                configs[cell.name] = cell_config(sweep, cell, sources[variant], marks)
            except ConfigError as error:
                for problem in error.problems:
                    failing.setdefault(problem, {})[variant] = None  # a dict keeps the variants in order, once
    if failing:
        raise ConfigError(
            [
                dataclasses.replace(
                    problem, message=f"{problem.message} (variant{'s' * (len(names) > 1)} {', '.join(names)})"
                )
                for problem, names in failing.items()
            ]
        )
    first_cell = next((cell.name for cell in cells if cell.variant == baseline), baseline)
    return configs, first_cell


def cell_config(sweep, cell, source, marks):
    """The cell's resolved `RunConfig`: the variant's mapping with the cell's values set."""
    data = source
    for key, value in cell.settings.items():
        try:
            data = apply_overrides(data, [(tuple(key.split(".")), value)])
        except ConfigError as error:
            where = locate(("sweep", "grid", key), [((), marks)], extra=True)
            raise ConfigError([dataclasses.replace(problem, where=where) for problem in error.problems]) from None
    return validate(RunConfig, data, [((), grid_marks(sweep, marks, cell.settings))])
