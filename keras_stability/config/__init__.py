"""Experiment files: YAML with positions, the schema and its sections, validation, overrides, sweep grids."""
