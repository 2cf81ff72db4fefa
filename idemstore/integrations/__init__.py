"""HTTP ``Idempotency-Key`` middleware: ``asgi`` (FastAPI, Starlette) and ``aiohttp``."""
