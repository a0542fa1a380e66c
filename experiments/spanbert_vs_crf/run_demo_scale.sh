#!/usr/bin/env bash
# The spanbert_vs_crf sweep at demo scale (the three heads x 3 seeds, generated data, tiny BERT, CPU, W&B offline),
# then its comparison report. 984 s on 2 CPU cores (2026-12-02). The report lands in $OUT/compare/ and, when
# KEEP=1, is copied to experiments/spanbert_vs_crf/demo_scale_report/.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-outputs/multirun/spanbert_vs_crf_demo/$(date +%Y-%m-%d_%H-%M-%S)}
make setup
.venv/bin/python -m spanqa.train --multirun experiment=spanbert_vs_crf_demo "hydra.sweep.dir=$OUT" "$@"
.venv/bin/python -m spanqa.compare "$OUT" --out "$OUT/compare"
if [ "${KEEP:-0}" = 1 ]; then
  rm -rf experiments/spanbert_vs_crf/demo_scale_report
  cp -r "$OUT/compare" experiments/spanbert_vs_crf/demo_scale_report
  report=experiments/spanbert_vs_crf/demo_scale_report/report.md
  { echo "> **Demo scale**: generated data, a tiny randomly initialised BERT, CPU. These numbers say nothing about"
    echo "> SpanBERT on SQuAD v2; they show the shape of the real report. Produced by run_demo_scale.sh."
    echo; cat "$report"; } > "$report.tmp" && mv "$report.tmp" "$report"
fi
