"""Score a checkpoint: `python eval.py ckpt_path=... [split=validation] [data/generation overrides]`."""

from weaver.cli.tools import evaluate as main

if __name__ == "__main__":
    main()
