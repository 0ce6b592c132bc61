"""kairos-harness: trace-driven load testing and simulation of ML inference dispatchers."""
