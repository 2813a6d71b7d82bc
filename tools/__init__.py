"""Maintenance scripts of the course (not installed; run them from the repository root)."""
