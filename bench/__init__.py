"""Benchmarks that print figures and ratios. They are not tests and assert nothing."""
