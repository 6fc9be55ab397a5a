"""The HTTP layer: one small router per resource, the credentials gate and the login, typed errors, body limits."""
