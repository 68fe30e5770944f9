"""The committed experiment files and claims ledger: all valid, and every claim names real runs."""

import glob
import os

import pytest

from keras_stability.config.loading import load_experiment
from keras_stability.report.claims import load_claims, load_claims_file
from keras_stability.report.outcomes import holds

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILES = sorted(f for f in glob.glob(os.path.join(ROOT, "experiments", "*.yaml")) if not f.endswith("claims.yaml"))


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_experiment_file_is_valid_with_five_seeds_for_claims(path):
    experiment = load_experiment(path)
    seeds = min(len(config.seeds) for config in experiment.variants.values())
    if experiment.name.startswith(("doc", "adaptive", "adding")):
        assert seeds >= 5, f"{experiment.name}: claims need ≥ 5 seeds per variant"


def test_every_claim_names_an_experiment_and_variants_that_exist():
    experiments = {e.name: e for e in map(load_experiment, FILES)}
    claims = load_claims(os.path.join(ROOT, "experiments", "claims.yaml"))
    assert len({claim.id for claim in claims}) == len(claims)
    for claim in claims:
        assert claim.experiment in experiments, claim.id
        variants = experiments[claim.experiment].variants
        # A swept variant's runs are its cells (`<variant>/<key=value>`): `holds` finds them by the file's name.
        assert holds(variants, claim.variant) and (claim.baseline is None or holds(variants, claim.baseline)), claim.id


def test_every_published_result_names_a_run_the_files_make():
    experiments = {e.name: e for e in map(load_experiment, FILES)}
    published = load_claims_file(os.path.join(ROOT, "experiments", "claims.yaml")).published
    assert published and len({entry.id for entry in published}) == len(published)
    for entry in published:
        runs = {variant for variant, _, _ in experiments[entry.experiment].runs()}
        assert entry.variant in runs, entry.id
