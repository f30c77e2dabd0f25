"""Integration tests: real Ray trials, MLflow stores and servers, the CLI in a subprocess, the fake hub,
hosts in network namespaces. The slow ones are marked `slow`."""
