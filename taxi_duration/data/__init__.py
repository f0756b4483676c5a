"""Files: TLC months (download, cache, read), the splits ingest builds, and predict's output
files. Imports only core."""
