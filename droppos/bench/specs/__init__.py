"""Benchmark specs shipped with droppos (YAML data files; `droppos bench NAME` resolves NAME here)."""
