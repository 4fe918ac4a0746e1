"""Compute-controlled comparisons of models: suites, budgets, runs, results (`megabyte compare`)."""
