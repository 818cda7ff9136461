"""Speed checks (not tests): run them as modules from the repository root."""
