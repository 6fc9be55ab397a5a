"""What tests/ and bench/ share to drive the service from outside: real cameras and the like.

Never shipped: the service image copies service/ and model_store/ only, and the package discovery
in pyproject.toml does not include it. Standard library (and the service) only, so that a bench
run needs no test dependency.
"""
