"""A small synchronous client for the native API, with retries on 429/503 and
connection errors (the idempotency key makes a retried submit safe)."""

from __future__ import annotations

import base64
import os
import time
import uuid
from typing import Any

import httpx

_RETRY_STATUS = (429, 502, 503)


class ApiError(Exception):
    """An error response: ``type`` is the stable error type, ``body`` the whole error."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        err = body.get("error", {}) if isinstance(body, dict) else {}
        self.status = status
        self.type = str(err.get("type", "http_error"))
        self.body = err
        super().__init__(f"{status} {self.type}: {err.get('message', body)}")


class Client:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = 300.0,
        retries: int = 3,
    ) -> None:
        """``api_key``: sk-... (default: $SDSERVE_API_KEY; none with auth off)."""
        api_key = api_key if api_key is not None else os.environ.get("SDSERVE_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, timeout=timeout, headers=headers)
        self._timeout = timeout
        self.retries = retries

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                resp = self._http.request(method, path, **kwargs)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
            else:
                if resp.status_code not in _RETRY_STATUS or attempt == self.retries:
                    if resp.status_code >= 400:
                        raise ApiError(resp.status_code, _json(resp))
                    return resp
            time.sleep(min(8.0, 0.5 * 2**attempt))
        raise AssertionError("unreachable")

    def generate(self, prompt: str, **params: Any) -> dict[str, Any]:
        """POST /v1/generate; ``images`` decoded to bytes under ``image_bytes``."""
        out: dict[str, Any] = self._request(
            "POST", "/v1/generate", json={"prompt": prompt, **params}
        ).json()
        out["image_bytes"] = [base64.b64decode(b) for b in out["images"]]
        return out

    def submit(
        self, prompt: str, idempotency_key: str | None = None, **params: Any
    ) -> dict[str, Any]:
        """POST /v1/jobs with an idempotency key (generated if not given), so the
        automatic retries never create a second job."""
        key = idempotency_key or uuid.uuid4().hex
        job: dict[str, Any] = self._request(
            "POST", "/v1/jobs", json={"prompt": prompt, **params}, headers={"Idempotency-Key": key}
        ).json()
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._request("GET", f"/v1/jobs/{job_id}").json()
        return job

    def wait(self, job_id: str, timeout: float = 600.0, poll: float = 0.5) -> dict[str, Any]:
        """The job once it ends, or once it is ``held`` for review (a person decides
        that, so waiting longer would not help)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in ("succeeded", "failed", "canceled", "held"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout}s")
            time.sleep(poll)

    def cancel(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._request("DELETE", f"/v1/jobs/{job_id}").json()
        return job

    def image(self, image_id_or_url: str) -> bytes:
        """An image by id, API link, or another absolute URL (a pre-signed one: fetched
        without this client's key, which must only ever go to the service)."""
        target = image_id_or_url if "/" in image_id_or_url else f"/v1/images/{image_id_or_url}"
        url, base = httpx.URL(target), self._http.base_url
        if url.is_absolute_url and (url.scheme, url.host, url.port) != (
            base.scheme,
            base.host,
            base.port,
        ):
            resp = httpx.get(url, timeout=self._timeout)
            if resp.status_code >= 400:
                raise ApiError(resp.status_code, _json(resp))
            return resp.content
        return self._request("GET", target).content


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {"error": {"type": "http_error", "message": resp.text[:500]}}
    return body if isinstance(body, dict) else {"error": {"message": str(body)}}
