"""The engine: the model zoo, compiled models and their cache, the runner, the suite, search and sweep workers."""
