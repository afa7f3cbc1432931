"""Side-by-side benchmarks of pluv-widget against its peers: ``python -m bench.run``."""
