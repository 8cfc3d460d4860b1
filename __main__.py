"""`python -m rewarddance`: the command line."""

from rewarddance.backend.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
