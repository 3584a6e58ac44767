"""Benchmarks: ``python -m bench`` runs them all (see ``bench/RESULTS.md``)."""
