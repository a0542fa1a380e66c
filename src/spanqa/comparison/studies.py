"""Optuna searches among the compared runs: each study found in a sweep dir (`optuna.db`, as
conf/hparams_search/optuna_f1.yaml keeps it), its trials as a table (number, state, value, params), and which run
dir is which trial. Trials of one search are not seeds of one setup: the comparison pairs each head's best trial,
never two arbitrary trials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spanqa.comparison.runs import Run, fmt_value
from spanqa.errors import DataError

STORAGE = "optuna.db"


@dataclass
class Trial:
    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    run: Run | None = None  # the run dir that trial trained, when it is among the compared runs


@dataclass
class Study:
    name: str
    storage: Path
    direction: str
    trials: list[Trial] = field(default_factory=list)

    @property
    def best(self) -> Trial | None:
        done = [t for t in self.trials if t.state == "COMPLETE" and t.value is not None]
        if not done:
            return None
        return (max if self.direction == "MAXIMIZE" else min)(done, key=lambda t: t.value)  # type: ignore[arg-type]


def _matches(run: Run, params: dict[str, Any]) -> bool:
    """Whether a run's config holds a trial's sampled values (floats as sampled, within rounding)."""
    for key, value in params.items():
        mine = run.config.get(key)
        if isinstance(value, float) and isinstance(mine, (int, float)):
            if not math.isclose(float(mine), value, rel_tol=1e-9):
                return False
        elif mine != value:
            return False
    return True


def find_studies(paths: list[Path], runs: list[Run]) -> list[Study]:
    """The studies of every optuna.db under `paths`, each trial tied to the compared run that holds its values."""
    found_storages = {p for root in paths for p in root.rglob(STORAGE) if p.is_file()}
    if not found_storages:
        return []
    import optuna  # a second and more to import: only when there is a study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = []
    for storage in sorted(found_storages):
        url = f"sqlite:///{storage.resolve()}"
        try:
            summaries = optuna.study.get_all_study_summaries(storage=url)
            for summary in summaries:
                study = optuna.load_study(study_name=summary.study_name, storage=url)
                found = Study(summary.study_name, storage, study.direction.name)
                under = [r for r in runs if storage.parent in Path(r.path).parents]
                for t in study.trials:
                    run = next((r for r in under if _matches(r, t.params)), None)
                    found.trials.append(Trial(t.number, t.state.name, t.value, dict(t.params), run))
                studies.append(found)
        except Exception as err:  # a locked, corrupt or foreign database: say which
            raise DataError(f"{storage}: not a readable Optuna study ({type(err).__name__}: {err})") from None
    return studies


def study_markdown(study: Study) -> str:
    """The trials of one study as a markdown table, the best one marked."""
    keys = sorted({k for t in study.trials for k in t.params})
    best = study.best
    header = ["trial", "state", f"value ({study.direction.lower()})", *keys, "run"]
    rows = []
    for t in study.trials:
        mark = " **(best)**" if best is not None and t.number == best.number else ""
        value = "–" if t.value is None else f"{t.value:.2f}"
        run = f"`{Path(t.run.path).name}`" if t.run else "–"
        rows.append([f"{t.number}{mark}", t.state, value, *(fmt_value(t.params.get(k, "–")) for k in keys), run])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def trial_runs(studies: list[Study]) -> dict[str, Trial]:
    """Run path → the trial it trained."""
    return {t.run.path: t for s in studies for t in s.trials if t.run is not None}
