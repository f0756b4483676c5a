"""The Makefile's helpers that are not entry points: `make data` and `make ui`."""
