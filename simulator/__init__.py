"""A fake APNs with simulated iPhones: the engine's peer in development, tests and benchmarks."""
