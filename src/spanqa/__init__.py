"""spanqa: SpanBERT with and without a CRF head for extractive QA on SQuAD v2."""

__version__ = "0.1.0"
