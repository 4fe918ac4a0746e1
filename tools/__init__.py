"""The `megabyte` command line (cli.py and a cmd_*.py module per subcommand), the inspection and
rendering utilities (inspect.py, render.py, which read shards through pipeline.format alone) and
the one-line error reporting (errors.py, also used by train/main.py's entry point).
pipeline/ and model/ never import tools/."""
