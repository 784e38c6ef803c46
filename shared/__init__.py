"""Code shared by the track, admin and aggregate functions.

Deployment copies this package next to each function's ``main.py``.
"""
