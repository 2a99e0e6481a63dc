"""Show which source tokens each output relied on: `python explain.py ckpt_path=... input="..." | input_file=...`."""

from weaver.cli.tools import explain as main

if __name__ == "__main__":
    main()
