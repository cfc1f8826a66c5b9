"""Benchmarks comparing pbnb with raw asyncio, Twisted PB, Pyro5 and RPyC (not tests)."""
