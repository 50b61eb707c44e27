"""The engine's core contracts: what every source and every executor plug-in implements.

Nothing here imports a plug-in, a server client or Qt (tests/test_boundaries.py).
"""
