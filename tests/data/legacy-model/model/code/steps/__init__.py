"""NYC taxi trip-duration pipeline: one module per MLproject entry point."""
