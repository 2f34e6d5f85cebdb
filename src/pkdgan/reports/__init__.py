"""Figures, galleries and the HTML page of one run."""
