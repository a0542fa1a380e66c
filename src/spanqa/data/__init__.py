"""SQuAD v2 questions → checked rows → question/context windows with labels → padded batches; the demo's stand-ins."""
