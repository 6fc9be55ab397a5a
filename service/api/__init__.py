"""The HTTP layer: one small router per resource, typed errors, body limits."""
