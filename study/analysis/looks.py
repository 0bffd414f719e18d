"""The test split's ledger: which trials each analysis of a study evaluated on it.

A test figure is a held-out estimate of the model chosen on validation only while nothing was chosen by
looking at it. Analysing again with the same selection reads the same figures: no new look. An analysis
that evaluates another selection on the test split (another --metric or --top-k, or a study that has gone on
since) is a new look, and picking among looks by their test figures turns the test split into a second
validation split. study.confirm's seed runs repeat a selected trial and choose nothing: an analysis that
adds them to the same selection looks at no other choice. Each analysis of the test split therefore writes
`<study>/analyses/<UTC time>.json` (the trials it evaluated there, study.confirm's seed runs included, at
which epochs, with what selection), and its report lists the earlier ones, saying which selected other
trials.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from cxrnets.errors import CxrError
from study import storage
from study.analysis.selection import Analysis

LOOKS_DIR = "analyses"
SEEDS = " seeds"  # ends the key of a cell's study.confirm seed runs in Look.evaluated


@dataclass
class Look:
    """One analysis's reading of the test split."""

    time: str                          # UTC, ISO 8601 to the millisecond
    metric: str
    top_k: int
    # "dataset / model" -> "trial id@epoch" evaluated on test, best first; "dataset / model seeds" -> the
    # study.confirm seed runs evaluated there
    evaluated: dict[str, list[str]]
    external: list[str] = field(default_factory=list)  # sets from elsewhere evaluated too

    @classmethod
    def of(cls, analysis: Analysis) -> "Look":
        evaluated: dict[str, list[str]] = {}
        # A trial that failed on the test split was read there too.
        scored = [(c.dataset, c.model, c.rank, c.candidate.trial_id, c.evaluation.epoch) for c in analysis.selected]
        scored += [(f.dataset, f.model, f.rank, f.candidate.trial_id, f.candidate.epoch) for f in analysis.failed]
        for dataset, model, _, trial_id, epoch in sorted(scored):
            evaluated.setdefault(f"{dataset} / {model}", []).append(f"{trial_id}@{epoch}")
        for run in analysis.confirmation.runs if analysis.confirmation else []:
            if run.evaluation is not None:
                evaluated.setdefault(f"{run.job.dataset} / {run.job.model}{SEEDS}", []).append(
                    f"{run.trial_id}@{run.evaluation.epoch}")
        external = sorted({s.name for s in analysis.external_sets})
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return cls(now, analysis.metric, analysis.top_k, evaluated, external)

    @property
    def selection(self) -> dict[str, list[str]]:
        """The trials chosen on validation that it evaluated, per cell: what it evaluated but the seed runs."""
        return {cell: trials for cell, trials in self.evaluated.items() if not cell.endswith(SEEDS)}

    def same_models(self, other: "Look") -> bool:
        return self.selection == other.selection


def earlier_looks(study_uri: str) -> tuple[list[Look], list[str]]:
    """The looks recorded in the study, oldest first, and what could not be read (why)."""
    looks, problems = [], []
    for entry in storage.listing(storage.join(study_uri, LOOKS_DIR)):
        if entry.is_dir or not entry.name.endswith(".json"):
            continue
        try:
            values = storage.read_json(entry.uri)
            looks.append(Look(str(values["time"]), str(values["metric"]), int(values["top_k"]),
                              {str(k): [str(t) for t in v] for k, v in values["evaluated"].items()},
                              [str(name) for name in values.get("external", [])]))
        except (OSError, CxrError, ValueError, KeyError, TypeError, AttributeError) as error:
            problems.append(f"{entry.uri}: unreadable record of an earlier analysis ({error})")
    return sorted(looks, key=lambda look: look.time), problems


def record_look(study_uri: str, look: Look) -> str | None:
    """Write the look into the study; what went wrong instead (a read-only bucket, say), if anything."""
    uri = storage.join(study_uri, LOOKS_DIR, f"{look.time.replace(':', '')}-{uuid.uuid4().hex[:8]}.json")
    try:
        storage.write_json(uri, asdict(look))
    except (OSError, CxrError) as error:
        return f"this analysis's look at the test split could not be recorded at {uri} ({error})"
    return None


def history(look: Look, earlier: list[Look]) -> str:
    """How often the test split was read before this look, in words (the report's header, the console)."""
    other = sum(not item.same_models(look) for item in earlier)
    same = len(earlier) - other
    if not earlier:
        return "first read by this analysis (recorded in the study's analyses/)"
    if not other:
        return f"read by {_analyses(same)} of these same trials at these epochs: the same figures, no new look"
    also = f", and by {_analyses(same)} of these same trials" if same else ""
    return (f"read before for other trials by {_analyses(other)} (see Earlier looks at the test split){also}: a "
            "choice among them made by their test figures would make the test split a second validation split")


def _analyses(count: int) -> str:
    """`count` earlier analyses, in words."""
    return f"{count} earlier {'analysis' if count == 1 else 'analyses'}"
