"""The benchmark scripts, run as files (`.venv/bin/python bench/NAME.py`), and what they share."""
