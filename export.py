"""Export a checkpoint: `python export.py ckpt_path=... output_dir=... [adapter_only=true]`."""

from weaver.cli.tools import export as main

if __name__ == "__main__":
    main()
