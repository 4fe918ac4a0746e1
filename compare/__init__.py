"""Compute-controlled comparisons of models: suites, budgets, runs, results (`megabyte compare`), and the real data they run on."""
