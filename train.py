"""Train a model: `python train.py [overrides]` (see `python train.py --help`)."""

from weaver.cli.train import main

if __name__ == "__main__":
    main()
