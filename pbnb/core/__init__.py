"""The sans-IO core: no sockets, no event loop, just bytes in and bytes out."""
