"""asyncio glue: connections, clients, servers."""
