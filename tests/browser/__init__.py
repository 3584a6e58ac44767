"""Real-browser tests: Debian's headless chromium, driven over CDP (see ``cdp.py``)."""
