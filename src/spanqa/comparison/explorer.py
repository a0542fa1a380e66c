"""The answer explorer's data: every evaluation question with its context, gold answers and each group's answer.

Per group, the answer shown is its first run's (lowest seed), with where it sits in the context and its no-answer
probability; EM and F1 are the means over the group's runs. Contexts are stored once each and questions point at
them: SQuAD v2 dev's 11,873 questions share 1,204 paragraphs. Read from the run dirs (per_question.json and
contexts.json); runs from before contexts.json show their questions without a context.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spanqa.comparison.runs import Group, Run
from spanqa.comparison.stats import question_word


def _seed(run: Run) -> tuple[int, str]:
    seed = run.config.get("seed")
    return (seed if isinstance(seed, int) else 0, run.path)


def explorer_data(groups: list[Group]) -> dict[str, Any]:
    """{"heads": [label…], "contexts": [text…], "questions": [[id, question, context index or -1, [gold…],
    question word, [[answer, start or -1, no-answer probability, EM, F1] per group]]…]} over the questions every
    group's runs scored."""
    tables = {g.label: [r for r in sorted(g.runs, key=_seed) if r.per_question] for g in groups}
    tables = {label: runs for label, runs in tables.items() if runs}
    if not tables:
        return {"heads": [], "contexts": [], "questions": []}
    shared = set.intersection(*(set(r.per_question) for runs in tables.values() for r in runs))  # type: ignore[arg-type]
    first_run = next(iter(tables.values()))[0]
    order = [qid for qid in first_run.per_question if qid in shared]  # type: ignore[union-attr]
    contexts: list[str] = []
    index: dict[str, int] = {}
    questions = []
    for qid in order:
        record = first_run.per_question[qid]  # type: ignore[index]
        context = _context(first_run, qid)
        at = -1 if context is None else index.setdefault(context, len(index))
        if at == len(contexts):
            contexts.append(context)  # type: ignore[arg-type]
        answers = []
        for runs in tables.values():
            shown = runs[0].per_question[qid]  # type: ignore[index]
            start = shown.get("start")
            answers.append([
                shown["prediction"], -1 if start is None else start, round(float(shown["na_prob"]), 4),
                round(float(np.mean([r.per_question[qid]["exact"] for r in runs])), 4),  # type: ignore[index]
                round(float(np.mean([r.per_question[qid]["f1"] for r in runs])), 4),  # type: ignore[index]
            ])  # fmt: skip
        questions.append(
            [qid, record["question"], at, list(record["gold"]), question_word(record["question"]), answers]
        )
    return {"heads": list(tables), "contexts": contexts, "questions": questions}


def _context(run: Run, qid: str) -> str | None:
    blob = run.contexts
    if not blob:
        return None
    at = blob["of"].get(qid)
    return None if at is None else blob["contexts"][at]
