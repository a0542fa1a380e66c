"""What every head hands post-processing: up to K candidate spans per window with their scores, and the window's
null (no-answer) score on the same scale. `spanqa.eval.answers.select_answers` pools them per question."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class WindowCandidates:
    start: np.ndarray  # (N, K) int64 token index, -1 = no candidate
    end: np.ndarray  # (N, K) int64 token index (inclusive), -1 = no candidate
    score: np.ndarray  # (N, K) float32 span score (higher = better), -inf for no candidate
    null: np.ndarray  # (N,) float32 the window's null (no-answer) score


def check_windows(name: str, arr: np.ndarray, n_windows: int, ndim: int) -> None:
    if arr.ndim != ndim or arr.shape[0] != n_windows:
        raise ValueError(f"{name} has shape {arr.shape}; expected {ndim} dims with {n_windows} windows first")
