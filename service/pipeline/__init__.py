"""One pipeline per camera: capture -> detect -> crop+classify -> track -> smooth -> rules -> publish."""
