"""``python -m deltalift``: the command line, as ``deltalift``."""

from deltalift.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
