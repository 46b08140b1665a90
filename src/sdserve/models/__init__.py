"""The model registry: which models a deployment serves (a TOML registry file and the
models folder), their revisions, aliases, A/B rollouts and routing rules. Torch-free:
the API imports it."""
