"""Experiment files: every class of error, with its line number, and `--set` overrides."""

import subprocess
import sys
import textwrap

import pytest

from keras_stability.config import loading, yaml_files
from keras_stability.config.loading import ConfigError, Location, Problem, load_experiment
from keras_stability.config.overrides import parse_override

GOOD = """\
name: tiny
seeds: [0, 1]
dataset:
  name: mnist_small
model:
  name: mlp
  hidden: [16]
optimizer:
  learning_rate: 0.1
variants:
  no_clip:
    stabilizer: null
  clipped:
    stabilizer:
      transforms:
        - name: clip_by_global_norm
          max_norm: 1.0
"""


def write(tmp_path, text, name="experiment.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def errors_of(path, overrides=()):
    with pytest.raises(ConfigError) as error:
        load_experiment(path, overrides)
    return error.value.lines


def problems_of(path, overrides=()):
    with pytest.raises(ConfigError) as error:
        load_experiment(path, overrides)
    return error.value.problems


def test_good_file_resolves_every_variant(tmp_path):
    experiment = load_experiment(write(tmp_path, GOOD))
    assert experiment.name == "tiny" and experiment.baseline == "no_clip"
    assert list(experiment.variants) == ["no_clip", "clipped"]
    assert experiment.variants["no_clip"].stabilizer is None
    assert experiment.variants["clipped"].stabilizer.transforms[0].max_norm == 1.0
    assert experiment.variants["clipped"].optimizer.learning_rate == 0.1
    assert [(v, s) for v, s, _ in experiment.runs()] == [("no_clip", 0), ("no_clip", 1), ("clipped", 0), ("clipped", 1)]


def test_file_without_variants_has_one_base_variant(tmp_path):
    experiment = load_experiment(write(tmp_path, "name: solo\n"))
    assert list(experiment.variants) == ["base"] and experiment.baseline == "base"


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("  hidden: [16]", "  hiden: [16]", "{path}:7:3: model.hiden: unknown key (did you mean 'hidden'?)"),
        (
            "  name: mlp",
            "  name: mpl",
            "{path}:6:9: model.name: unknown name 'mpl', expected one of mlp, deep_mlp, cnn3, cnn4, cnn4_pool4, fmnist_2c2d, rnn, embedding_bag "
            "(did you mean 'mlp'?)",
        ),
        (
            "  learning_rate: 0.1",
            "  learning_rate: -0.1",
            "{path}:9:18: optimizer.learning_rate: Input should be greater than 0",
        ),
        (
            "  learning_rate: 0.1",
            "  learning_rate: fast",
            "{path}:9:18: optimizer.learning_rate: Input should be a valid number. Received: the string 'fast'; "
            "a string is never converted to another type",
        ),
        ("seeds: [0, 1]", "seeds: []", "{path}:2:8: seeds: List should have at least 1 item after validation, not 0"),
        (
            "          max_norm: 1.0",
            "          max_nrm: 1.0",
            "{path}:17:11: [variant clipped] stabilizer.transforms.0.max_nrm: unknown key (did you mean 'max_norm'?)",
        ),
        (
            "        - name: clip_by_global_norm",
            "        - name: clip_global",
            "{path}:16:11: [variant clipped] stabilizer.transforms.0: unknown transform 'clip_global', expected one of "
            "clip_by_value, clip_by_norm, clip_by_global_norm, normalize_gradient, adaptive_clip, autoclip, zclip, clip_by_l1_norm, regularize_gradient, quantized_ema_clip, adagc "
            "(did you mean 'clip_by_global_norm'?)",
        ),
        (
            "  name: mnist_small",
            "  name: adding_problem",
            "{path}:1:1: (top level): model 'mlp' does not fit dataset 'adding_problem': "
            "adding_problem needs model rnn, and rnn needs adding_problem",
        ),
        (
            "  learning_rate: 0.1",
            "  learning_rate: 0.1\ntraining:\n  jit_compile: true",
            "{path}:11:16: [variant clipped] training.jit_compile: " + loading.NO_XLA_IN_RUNS,
        ),
        (
            "  name: mnist_small",
            "  name: zipf_tokens",
            "{path}:1:1: (top level): model 'mlp' does not fit dataset 'zipf_tokens': "
            "zipf_tokens needs model embedding_bag, and embedding_bag needs zipf_tokens",
        ),
    ],
)
def test_each_error_is_one_located_line(tmp_path, old, new, expected):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    assert expected.format(path=path) in errors_of(path)


def test_the_embedding_covers_the_token_ids(tmp_path):
    text = GOOD.replace("  name: mnist_small", "  name: zipf_tokens\n  vocabulary: 800").replace(
        "  name: mlp\n  hidden: [16]", "  name: embedding_bag\n  vocabulary: 500"
    )
    path = write(tmp_path, text)
    assert errors_of(path) == [
        f"{path}:1:1: (top level): the embedding's vocabulary must cover the dataset's ids. "
        "Received: model.vocabulary=500 < dataset.vocabulary=800"
    ]


def test_momentum_only_for_sgd(tmp_path):
    path = write(tmp_path, GOOD.replace("  learning_rate: 0.1", "  name: adam\n  momentum: 0.9"))
    assert errors_of(path) == [f"{path}:9:3: optimizer: momentum and nesterov apply to sgd only, not adam"]


def test_yaml_syntax_error_and_duplicate_keys(tmp_path):
    path = write(tmp_path, "name: x\nmodel: {name: mlp\n")
    assert errors_of(path)[0].startswith(f"{path}:3:1: YAML syntax error: ")
    path = write(tmp_path, "name: x\nseeds: [0]\nseeds: [1]\n")
    assert errors_of(path) == [f"{path}:3:1: seeds: duplicate key"]
    path = write(tmp_path, "- a list\n")
    assert errors_of(path) == [f"{path}:1:1: an experiment file is a mapping of keys (name, seeds, model, ...)"]


def test_unknown_baseline_is_reported(tmp_path):
    path = write(tmp_path, GOOD.replace("seeds: [0, 1]", "seeds: [0, 1]\nbaseline: no_clp"))
    assert errors_of(path) == [f"{path}:3:11: baseline: no variant named 'no_clp' (did you mean 'no_clip'?)"]


def test_missing_file(tmp_path):
    assert errors_of(str(tmp_path / "nope.yaml")) == [
        f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory"
    ]


def test_overrides_parse_yaml_values():
    assert parse_override("optimizer.learning_rate=0.5") == (("optimizer", "learning_rate"), 0.5)
    assert parse_override("model.hidden=[32, 16]") == (("model", "hidden"), [32, 16])
    assert parse_override("stabilizer=null") == (("stabilizer",), None)
    assert parse_override("description='a: b'") == (("description",), "a: b")
    for bad in ["learning_rate", "=3", "optimizer..lr=1", "1x=2"]:
        with pytest.raises(ConfigError, match=r"expected KEY\.PATH=VALUE"):
            parse_override(bad)


def test_overrides_apply_to_every_variant_and_are_validated(tmp_path):
    path = write(tmp_path, GOOD)
    experiment = load_experiment(path, ["optimizer.learning_rate=0.5", "training.epochs=2"])
    assert {c.optimizer.learning_rate for c in experiment.variants.values()} == {0.5}
    assert {c.training.epochs for c in experiment.variants.values()} == {2}
    assert errors_of(path, ["optimizer.learning_rat=0.5"]) == [
        "--set optimizer.learning_rat=0.5: optimizer.learning_rat: unknown key (did you mean 'learning_rate'?)"
    ]
    assert errors_of(path, ["training.epochs=0"]) == [
        "--set training.epochs=0: training.epochs: Input should be greater than 0"
    ]


def test_cli_validate_prints_errors_and_exits_2(tmp_path):
    good = write(tmp_path, GOOD, "good.yaml")
    bad = write(tmp_path, GOOD.replace("  hidden: [16]", "  hiden: [16]"), "bad.yaml")
    ok = subprocess.run([sys.executable, "-m", "keras_stability.cli", "validate", good], capture_output=True, text=True)
    assert ok.returncode == 0
    assert ok.stdout == f"{good}: ok (tiny: 2 variants, 4 runs, baseline no_clip)\n"
    failed = subprocess.run(
        [sys.executable, "-m", "keras_stability.cli", "validate", bad], capture_output=True, text=True
    )
    assert failed.returncode == 2
    assert failed.stderr == f"{bad}:7:3: model.hiden: unknown key (did you mean 'hidden'?)\n"


def test_repository_experiments_are_valid():
    from keras_stability.cli import expand

    files = expand(["experiments"])
    assert "experiments/quickstart.yaml" in files
    for path in files:
        load_experiment(path)


def write_bytes(tmp_path, data, name="experiment.yaml"):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def alias_bomb():
    """Nine levels of nine aliases: 9⁹ ≈ 387 million strings once expanded, 342 bytes written."""
    lines = ["a: &a [" + ", ".join(['"lol"'] * 9) + "]"]
    for previous, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_problems_are_records_formatted_once(tmp_path):
    path = write(tmp_path, GOOD.replace("          max_norm: 1.0", "          max_nrm: 1.0"))
    with pytest.raises(ConfigError) as error:
        load_experiment(path)
    missing, unknown = error.value.problems
    assert missing == Problem(
        Location(path, 16, 11), ("stabilizer", "transforms", 0, "max_norm"), "Field required", "clipped"
    )
    assert unknown == Problem(
        Location(path, 17, 11),
        ("stabilizer", "transforms", 0, "max_nrm"),
        "unknown key (did you mean 'max_norm'?)",
        variant="clipped",
    )
    assert str(error.value) == "\n".join(error.value.lines) == f"{missing}\n{unknown}"
    assert str(unknown) == (
        f"{path}:17:11: [variant clipped] stabilizer.transforms.0.max_nrm: unknown key (did you mean 'max_norm'?)"
    )


def test_a_set_option_that_does_not_fit_is_placed_at_its_text(tmp_path):
    path = write(tmp_path, GOOD)
    [problem] = problems_of(path, ["model.hidden.3=8"])
    assert problem == Problem(
        Location("--set model.hidden.3=8"), ("model", "hidden", "3"), "model.hidden has no item 3"
    )
    assert str(problem) == "--set model.hidden.3=8: model.hidden.3: model.hidden has no item 3"
    # A `--set` value with an alias is text, never expanded.
    assert parse_override("description=*a") == (("description",), "*a")


@pytest.mark.parametrize(
    "data, expected",
    [
        # Latin-1 é: byte 17 of line 2 ("description: caf" is 16 characters).
        (b"name: x\ndescription: caf\xe9 au lait\n", "{path}:2:17: not UTF-8 (byte 0xe9): save the file as UTF-8"),
        (
            b'name: x\ndescription: "tab\x07bell"\n',
            '{path}:2:18: character 0x0007 is not allowed in YAML: delete it, or write it as an escape ("\\x07") '
            "inside double quotes",
        ),
        (
            b"name: x\n\x00seeds: [0]\n",
            "{path}:2:1: character 0x0000 is not allowed in YAML: delete it, or write it "
            'as an escape ("\\x00") inside double quotes',
        ),
        # Sequence 64 opens at column 8 + 62 and is the 64th level (the file's mapping is the first).
        (
            b"name: x\nseeds: " + b"[" * 100 + b"]" * 100 + b"\n",
            "{path}:2:71: nested more than 64 levels deep; an experiment file needs 5",
        ),
        (
            b"name: !!python/object/apply:os.system [echo]\n",
            "{path}:1:7: YAML syntax error: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object/apply:os.system'",
        ),
        (b'name: "x\n', "{path}:2:1: YAML syntax error: found unexpected end of stream"),
        (b"", "{path}:1:1: an experiment file is a mapping of keys (name, seeds, model, ...)"),
        (
            b"name: &n x\ndescription: *n\n",
            "{path}:1:7: YAML anchors and aliases (&name, *name) are not accepted: write the value out, "
            "or share settings through `variants:` or `--set`",
        ),
    ],
    ids=["latin-1", "control", "nul", "deep", "python-tag", "unclosed", "empty", "alias"],
)
def test_bad_files_are_one_located_line(tmp_path, data, expected):
    path = write_bytes(tmp_path, data)
    assert errors_of(path) == [expected.format(path=path)]


def test_alias_bomb_is_refused_at_its_first_anchor_before_expansion(tmp_path, monkeypatch):
    text = alias_bomb()
    assert len(text.encode()) < 1024 and text.count("\n") == 9
    path = write(tmp_path, text)

    def never(*args, **kwargs):
        raise AssertionError("the bomb reached a step that walks its expansion")

    monkeypatch.setattr(yaml_files, "compose_marks", never)
    monkeypatch.setattr(loading, "validate", never)
    # Line 1, column 4: the first anchor; PyYAML composes as it parses, so nothing after it was read.
    assert errors_of(path) == [
        f"{path}:1:4: YAML anchors and aliases (&name, *name) are not accepted: write the "
        "value out, or share settings through `variants:` or `--set`"
    ]


def test_cli_reports_each_bad_file_in_one_line_with_exit_2(tmp_path):
    files = [
        write_bytes(tmp_path, b"name: x\ndescription: caf\xe9\n", "latin1.yaml"),
        write_bytes(tmp_path, b"name: x\ndescription: a\x1bb\n", "escape.yaml"),
        write(tmp_path, alias_bomb(), "bomb.yaml"),
        write_bytes(tmp_path, b"name: [x\n", "syntax.yaml"),
    ]
    completed = subprocess.run(
        [sys.executable, "-m", "keras_stability.cli", "validate", *files], capture_output=True, text=True
    )
    assert completed.returncode == 2
    lines = completed.stderr.splitlines()
    assert [line.split(":")[:3] for line in lines] == [
        [files[0], "2", "17"],
        [files[1], "2", "15"],
        [files[2], "1", "4"],
        [files[3], "2", "1"],
    ]
    assert "Traceback" not in completed.stderr
