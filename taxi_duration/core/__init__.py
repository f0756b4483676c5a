"""The bottom layer: contracts (names, columns, artifact paths), errors, parameters, processes,
code fingerprints and content digests; imports nothing else of the project."""
