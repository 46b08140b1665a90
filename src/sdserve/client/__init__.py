"""The Python client: httpx + pydantic only (``pip install sdserve``), never torch.

``Client`` and ``AsyncClient`` share one core (retries, idempotency keys, errors);
``verify_webhook`` checks a webhook's signature without the server's dependencies.
"""

from sdserve.client._core import RetryPolicy
from sdserve.client.aio import AsyncClient
from sdserve.client.errors import (
    APIConnectionError,
    ApiError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    SdserveClientError,
    ServerError,
    WaitTimeout,
)
from sdserve.client.sync import Client
from sdserve.client.webhooks import WebhookVerificationError, verify_webhook

__all__ = [
    "APIConnectionError",
    "ApiError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "InvalidRequestError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "RetryPolicy",
    "SdserveClientError",
    "ServerError",
    "WaitTimeout",
    "WebhookVerificationError",
    "verify_webhook",
]
