"""Putting rendered frames together: grids of portraits, several faces of one photo."""
