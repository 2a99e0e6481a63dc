"""Generate with a checkpoint: `python predict.py ckpt_path=... input_file=... | input="..." | interactive=true`."""

from weaver.cli.tools import predict as main

if __name__ == "__main__":
    main()
