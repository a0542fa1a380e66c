"""`make compare`: finished runs → groups → paired statistics → a markdown report with figures."""
