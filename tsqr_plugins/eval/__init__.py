"""BRIGHT-style evaluation: datasets, metrics, the runner behind `tsqr eval`, and reports."""
