"""The live dashboard: a page served by the service, fed by its own state and the broker."""
