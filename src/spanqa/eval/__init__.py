"""Window candidates → one answer per question → official SQuAD v2 scores, under a null-threshold policy."""
