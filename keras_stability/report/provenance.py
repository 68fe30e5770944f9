"""Where results and claims come from: the commits of an experiment's runs, and when each claim was
registered in git — a claim registered after its experiment's first result is exploratory."""

import os
import subprocess
from collections import Counter
from dataclasses import dataclass

import yaml


@dataclass(frozen=True)
class RunSource:
    """How many runs came from one commit, clean or dirty (a working tree with uncommitted changes)."""

    commit: str | None
    dirty: bool | None
    runs: int


@dataclass(frozen=True)
class Provenance:
    """An experiment's run sources, its first run's start (Unix time) and commit, and a warning when
    its runs come from more than one commit or a dirty tree (empty when they agree)."""

    sources: tuple[RunSource, ...]
    first_started: float | None
    first_commit: str | None
    warning: str


def provenance(experiment) -> Provenance:
    runs = [run for runs in experiment.variants.values() for run in runs]
    counts = Counter((run.meta.get("git", {}).get("commit"), run.meta.get("git", {}).get("dirty")) for run in runs)
    sources = tuple(RunSource(commit, dirty, n) for (commit, dirty), n in sorted(counts.items(), key=lambda c: -c[1]))
    started = [run for run in runs if isinstance(run.meta.get("started"), (int, float))]
    first = min(started, key=lambda run: run.meta["started"]) if started else None
    problems = []
    if len(sources) > 1:
        problems.append(f"runs come from {len({s.commit for s in sources})} commits")
    dirty = sum(s.runs for s in sources if s.dirty)
    if dirty:
        problems.append(f"{dirty} of {len(runs)} runs ran from a working tree with uncommitted changes")
    return Provenance(
        sources,
        first.meta["started"] if first else None,
        first.meta.get("git", {}).get("commit") if first else None,
        "; ".join(problems),
    )


@dataclass(frozen=True)
class Registration:
    """The first commit whose claims file holds a claim's id, and its commit time (Unix)."""

    commit: str
    time: float


def git(directory, *arguments):
    return subprocess.run(["git", "-C", directory, *arguments], capture_output=True, text=True, check=False)


def registrations(claims_path) -> dict[str, Registration]:
    """{claim id: Registration} from the git history of `claims_path`; a claim that is not committed
    yet (or a file outside git) has none."""
    directory, name = os.path.split(os.path.abspath(claims_path))
    log = git(directory, "log", "--reverse", "--format=%H %ct", "--", name)
    found = {}
    for line in log.stdout.splitlines():
        commit, time = line.split()
        shown = git(directory, "show", f"{commit}:./{name}")
        try:
            claims = (yaml.safe_load(shown.stdout) or {}).get("claims") or []
        except yaml.YAMLError:  # a broken version in history registers nothing
            continue
        for claim in claims:
            if isinstance(claim, dict) and isinstance(claim.get("id"), str):
                found.setdefault(claim["id"], Registration(commit, float(time)))
    return found


def exploratory_reason(claim, registration: Registration | None, first: Provenance | None) -> str:
    """Why a claim is exploratory ("" when it is confirmatory): marked so by hand, not committed, or
    committed after its experiment's first run started."""
    if claim.exploratory:
        return "marked exploratory in the claims file"
    if first is None or first.first_started is None:
        return ""
    if registration is None:
        return "not committed to the claims file's history"
    if registration.time > first.first_started:
        return (
            f"registered in {registration.commit[:10]} after the experiment's first run "
            f"(from {(first.first_commit or 'unknown')[:10]}) had started"
        )
    return ""
