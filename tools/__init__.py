"""The `megabyte` command line and the inspection / rendering utilities. Nothing imports tools/."""
