"""Napalm Sky."""
