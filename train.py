"""Train a model: `python train.py [overrides]` (see `python train.py --help`)."""

from weaver.cli.tools import train as main

if __name__ == "__main__":
    main()
