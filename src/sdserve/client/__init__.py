"""The Python client: httpx + pydantic only (``pip install sdserve[client]``)."""

from sdserve.client.http import ApiError, Client

__all__ = ["ApiError", "Client"]
