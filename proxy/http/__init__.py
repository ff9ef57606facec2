"""The edges: the aiohttp application, farebox's own HTTP/1.1 server, and what both share."""
