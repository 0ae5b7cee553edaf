"""`docread serve`: one warm model behind an OpenAI-compatible HTTP API (the `serve` extra: FastAPI,
uvicorn). `create_app(reader)` builds the app; `docread.remote` talks to it (httpx only);
`docread.cli.serve` only parses options and runs uvicorn."""


def __getattr__(name: str):
    if name == "create_app":  # FastAPI loads only for the server, never for a client
        from docread.serve.app import create_app

        return create_app
    raise AttributeError(name)


__all__ = ["create_app"]
