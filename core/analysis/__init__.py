"""Analyses over stored scores: `analyses` (statistics of explanation scores), `overlap` (matching
latents across dictionaries), `figures`, `report`, and their CLI (`commands`)."""
