"""One module per chapter: its `Config`, `PRESETS` and the run functions its sweeps call."""
