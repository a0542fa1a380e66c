"""The Trainer and what surrounds a run: its arguments, several processes, W&B, and the records it leaves."""
