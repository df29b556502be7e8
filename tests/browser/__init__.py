"""Browser tests (headless Chromium against the served app)."""
