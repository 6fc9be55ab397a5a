"""The trainer: EAN and iterative teacher-student distillation (needs torch; the service never imports it)."""
