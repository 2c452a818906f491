"""Named benchmark specs and performance benchmarks (results committed under benchmarks/results/)."""
