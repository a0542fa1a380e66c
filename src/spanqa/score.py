"""Command-line SQuAD v2 scorer with the arguments and JSON output of the official ``evaluate-v2.0.py``.

    python -m spanqa.score dev-v2.0.json predictions.json [-o eval.json] [-n na_prob.json] [-t 1.0]

(`python -m spanqa.evaluate` is the same command.)

As in the official script, the ``best_*`` keys appear only when a no-answer probability file is given,
the JSON goes to stdout with an indent of 2 unless ``--out-file`` is set, and ``--out-file`` gets compact
JSON. Precision-recall plots (``--out-image-dir``) are not implemented and are refused rather than ignored.
Bad input exits with status 2 and one line on stderr naming the file and the problem.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from spanqa.errors import ArgumentParser, DataError, fail, reported
from spanqa.eval.squad_v2 import gold_from_squad_json, squad_v2_scores

_BEST_KEYS = ("best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m spanqa.score", description="Official-semantics scorer for SQuAD version 2.0."
    )
    parser.add_argument("data_file", metavar="data.json", help="Input data JSON file (official SQuAD format).")
    parser.add_argument("pred_file", metavar="pred.json", help="Model predictions: question id -> answer text.")
    parser.add_argument("--out-file", "-o", metavar="eval.json", help="Write metrics to file (default: stdout).")
    parser.add_argument(
        "--na-prob-file", "-n", metavar="na_prob.json", help="Model probability of no answer per question id."
    )
    parser.add_argument(
        "--na-prob-thresh",
        "-t",
        type=float,
        default=1.0,
        help='Predict "" if the no-answer probability exceeds this (default = 1.0).',
    )
    parser.add_argument(
        "--out-image-dir", "-p", metavar="out_images", default=None, help="Not supported (PR curve plots)."
    )
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="Log every question id without a prediction to stderr."
    )
    return parser.parse_args(argv)


def _load_json(path: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read file ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def load_gold(path: str) -> dict[str, list[str]]:
    return gold_from_squad_json(_load_json(path), where=path)


def load_predictions(path: str) -> dict[str, str]:
    preds = _load_json(path)
    if not isinstance(preds, dict):
        raise DataError(f"{path}: predictions must be a JSON object mapping question id to answer text")
    bad = [qid for qid, text in preds.items() if not isinstance(text, str)]
    if bad:
        raise DataError(f"{path}: prediction for {bad[0]} is not a string")
    return preds


def load_na_probs(path: str) -> dict[str, float]:
    probs = _load_json(path)
    if not isinstance(probs, dict):
        raise DataError(f"{path}: no-answer probabilities must be a JSON object mapping question id to number")
    for qid, p in probs.items():
        # bool is an int subclass but never a meaningful probability.
        if isinstance(p, bool) or not isinstance(p, (int, float)) or math.isnan(p):
            raise DataError(f"{path}: no-answer probability for {qid} is not a number")
    return {qid: float(p) for qid, p in probs.items()}


def evaluate_files(args: argparse.Namespace) -> dict[str, float]:
    """Scores in the official key order; raises ``DataError`` for unusable inputs."""
    gold = load_gold(args.data_file)
    preds = load_predictions(args.pred_file)
    na_probs = load_na_probs(args.na_prob_file) if args.na_prob_file else None
    if na_probs is not None:
        lacking = [qid for qid in gold if qid in preds and qid not in na_probs]
        if lacking:
            raise DataError(f"{args.na_prob_file}: no probability for {len(lacking)} question(s), e.g. {lacking[0]}")
    if args.verbose:
        for qid in gold:
            if qid not in preds:
                print(f"Missing prediction for {qid}", file=sys.stderr)
    try:
        result = squad_v2_scores(gold, preds, na_probs, args.na_prob_thresh)
    except ValueError as exc:
        raise DataError(f"{args.pred_file}: {exc} in {args.data_file}") from None
    if na_probs is None:
        return {k: v for k, v in result.scores.items() if k not in _BEST_KEYS}
    return result.scores


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.out_image_dir is not None:
        fail("--out-image-dir (precision-recall plots) is not supported")
    with reported():
        scores = evaluate_files(args)
    if args.out_file:
        try:
            with open(args.out_file, "w", encoding="utf-8") as f:
                json.dump(scores, f)
        except OSError as err:
            fail(f"{args.out_file}: cannot be written ({err.strerror})")
    else:
        print(json.dumps(scores, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
