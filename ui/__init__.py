"""Shared Streamlit helpers for the app's pages (one module per concept); `core/` never imports this package."""
