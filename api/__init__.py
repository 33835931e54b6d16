"""The HTTP API: a Litestar app over the engine (``api.app.create_app``), served by uvicorn
or granian (``api.server.serve``); ``api.asgi:app`` is the factory the server workers import."""
