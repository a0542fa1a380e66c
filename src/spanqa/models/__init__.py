"""The answer heads (a registry), their models (the start/end head via transformers' Auto class, SpanBERT-CRF here),
and loading them from the Hub or a local checkpoint."""
