"""`python -m spanqa.evaluate`: the name the official-format scorer had first; the same command as `spanqa.score`."""

import sys

from spanqa.score import main

if __name__ == "__main__":
    sys.exit(main())
