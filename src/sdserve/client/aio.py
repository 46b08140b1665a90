"""The asynchronous client: Client's methods, awaited (one shared core)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from sdserve.client._core import TERMINAL, Core, error_of, image_path, with_image_bytes
from sdserve.client.errors import APIConnectionError, WaitTimeout
from sdserve.client.sse import SSEDecoder
from sdserve.client.sync import OnUpdate


class AsyncClient:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        """``api_key``: sk-... (default $SDSERVE_API_KEY; none with auth off).
        ``timeout``: seconds per request (connect at most 10 s), or an httpx.Timeout.
        ``retries``: retries of connect errors, 429 (after Retry-After) and 502/503/504."""
        self._core = Core.build(base_url, api_key, timeout, retries, backoff)
        if rng is not None:
            self._core.rng = rng
        self._http = httpx.AsyncClient(transport=transport, **self._core.client_args())
        self._sleep = sleep

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def request(
        self, method: str, path: str, *, idempotency_key: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One call with the retry policy; raises a typed ApiError on an error status."""
        headers = {**self._core.headers_for(method, idempotency_key), **kwargs.pop("headers", {})}
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                delay = self._core.delay_after(attempt, None, exc)
                if delay is None:
                    raise APIConnectionError(f"{method} {path}: {exc}") from exc
            else:
                delay = self._core.delay_after(attempt, response, None)
                if delay is None:
                    return self._core.check(response)
            await self._sleep(delay)
            attempt += 1

    async def generate(
        self, prompt: str, idempotency_key: str | None = None, **params: Any
    ) -> dict[str, Any]:
        """POST /v1/generate and wait; images decoded under ``image_bytes``."""
        body = {"prompt": prompt, **params}
        response = await self.request(
            "POST", "/v1/generate", json=body, idempotency_key=idempotency_key
        )
        out: dict[str, Any] = response.json()
        return with_image_bytes(out)

    async def submit(
        self, prompt: str, idempotency_key: str | None = None, **params: Any
    ) -> dict[str, Any]:
        """POST /v1/jobs (202): the job view, queued."""
        body = {"prompt": prompt, **params}
        response = await self.request(
            "POST", "/v1/jobs", json=body, idempotency_key=idempotency_key
        )
        job: dict[str, Any] = response.json()
        return job

    async def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = (await self.request("GET", f"/v1/jobs/{job_id}")).json()
        return job

    async def cancel(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = (await self.request("DELETE", f"/v1/jobs/{job_id}")).json()
        return job

    async def models(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = (await self.request("GET", "/v1/models")).json()["data"]
        return data

    async def image(self, image_id_or_url: str) -> bytes:
        """An image by id, API link, or another absolute URL (a pre-signed one: fetched
        without this client's key, which only ever goes to the service)."""
        target = image_path(image_id_or_url)
        if not self._core.is_service_url(target):
            async with httpx.AsyncClient(timeout=self._core.timeout) as plain:
                response = await plain.get(target)
            return self._core.check(response).content
        return (await self.request("GET", target)).content

    async def wait(
        self,
        job_id: str,
        timeout: float = 600.0,
        poll: float = 0.5,
        on_update: OnUpdate | None = None,
        stream: bool = True,
    ) -> dict[str, Any]:
        """The job once it ends. Follows GET /v1/jobs/{id}/events (``on_update`` gets
        every view: queue position, then steps); if the stream is unavailable or
        breaks, polls every ``poll`` seconds instead."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        if stream:
            try:
                last = await self._follow(job_id, deadline, timeout, on_update)
            except (httpx.TransportError, APIConnectionError):
                last = None  # fall back to polling
            if last is not None and last["status"] in TERMINAL:
                return last
        while True:
            job = await self.job(job_id)
            if on_update is not None and job != last:
                on_update(job)
            last = job
            if job["status"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise WaitTimeout(job_id, job["status"], timeout)
            await self._sleep(poll)

    async def _follow(
        self, job_id: str, deadline: float, timeout: float, on_update: OnUpdate | None
    ) -> dict[str, Any] | None:
        last: dict[str, Any] | None = None
        async with self._http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
            if response.status_code in (401, 403, 404):
                await response.aread()
                raise error_of(response)
            if response.status_code != 200:
                return None
            decoder = SSEDecoder()
            async for line in response.aiter_lines():
                event = decoder.feed(line)
                if event is not None and event.event == "job":
                    last = json.loads(event.data)
                    if on_update is not None:
                        on_update(last)
                    if last["status"] in TERMINAL:
                        return last
                if time.monotonic() > deadline:
                    status = last["status"] if last else "unknown"
                    raise WaitTimeout(job_id, status, timeout)
        return last
