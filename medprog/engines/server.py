"""`openai:MODEL@URL[,URL...]` — any OpenAI-compatible ``/chat/completions`` server.

The constraint travels as the server's structured-output request fields (vLLM by default,
SGLang with ``dialect="sglang"``), and every reply is validated again here with
`check_text`: a violation, or a request that still fails after its retries, becomes that
call's ``Completion.error`` — `_generate` never raises for one call's failure.

Requests are spread round-robin over the base URLs (replicas of one model), at most
``concurrency`` in flight across all threads; 429, 5xx, timeouts and refused connections
are retried with exponential backoff, moving to the next URL. Endpoints must be on the
loopback or a private network unless ``allow_remote=True`` (patient text).

Each request's timeout follows the work it asks for (`server_timing.ServerSpeed`): its prompt and
the tokens it may generate, at the server's measured speed (an assumed slow CPU server until
measured), times a slack factor, never under a floor.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import random
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from medprog.engines.base import Completion, Engine, EngineError, Messages, Sampling
from medprog.engines.cache import RequestCache
from medprog.engines.constraints import (
    ChoiceConstraint,
    Constraint,
    ConstraintViolation,
    JsonConstraint,
    TaggedConstraint,
    check_text,
    tagged_regex,
)
from medprog.engines.server_timing import CONNECT_TIMEOUT_S, ServerSpeed, requested_tokens

log = logging.getLogger(__name__)

Dialect = Literal["vllm", "sglang"]

VLLM_HINT = ("start one with: vllm serve PATH --host 127.0.0.1 --port 8000 "
             "--structured-outputs-config '{\"backend\":\"xgrammar\",\"disable_any_whitespace\":true}' "
             "(CPU-only machine: bash scripts/setup_vllm.sh, then "
             ".vllm-venv/bin/python -m vllm.entrypoints.openai.api_server --model PATH with the same options)")
DOWN_COOLDOWN_S = 5.0
"""After a refused connection a URL is skipped by the round-robin for this long."""
RETRY_AFTER_CAP_S = 30.0


class ServerUnreachableError(EngineError):
    """No server answers at any of the engine's URLs (raised by `check` and on the first call)."""


class RemoteEndpointError(ValueError):
    """An endpoint outside the loopback and private networks, without ``allow_remote``."""


class _Retryable(Exception):
    def __init__(self, message: str, *, refused: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.refused = refused
        self.retry_after = retry_after


def normalize_base_url(url: str) -> str:
    """Strip a trailing slash; a URL with no path gets vLLM's ``/v1``."""
    url = url.strip().rstrip("/")
    if urlsplit(url).path in ("", "/"):
        url += "/v1"
    return url


def is_local_host(host: str) -> bool:
    """Whether ``host`` is loopback or a private address (names are resolved; all addresses must qualify)."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        addrs = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            addrs = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in socket.getaddrinfo(host, None)}
        except (socket.gaierror, UnicodeError):
            return False
    return bool(addrs) and all(a.is_loopback or a.is_private for a in addrs)


def request_fields(c: Constraint | None, dialect: Dialect = "vllm") -> dict[str, Any]:
    """The request-body fields that carry ``c`` to a ``dialect`` server."""
    if c is None:
        return {}
    if isinstance(c, JsonConstraint):
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "medprog_output", "schema": c.json_schema,
                                                    "strict": True}}}
    if isinstance(c, ChoiceConstraint):
        if dialect == "sglang":
            return {"regex": "(?:" + "|".join(re.escape(x) for x in c.choices) + ")"}
        return {"structured_outputs": {"choice": list(c.choices)}}
    if isinstance(c, TaggedConstraint):
        if dialect == "sglang":
            return {"regex": tagged_regex(c)}
        return {"structured_outputs": {"regex": tagged_regex(c)}}
    raise TypeError(f"unknown constraint {type(c).__name__}")


class ServerEngine(Engine):
    """Constrained chat completions from one model served at one or more OpenAI-compatible URLs.

    The first call pings every URL (`check`): if none answers it raises
    `ServerUnreachableError` naming the URLs and how to start vLLM, rather than turning a
    wrong address into one error per example. After that, failures are per-call errors.
    ``url_stats`` counts answered and failed attempts per URL; ``retried`` counts retries.
    ``timeout=None`` (the default) sizes each request's timeout from its work (`ServerSpeed`,
    ``speed``); a number fixes it.
    """

    name = "openai"
    thread_safe = True  # the concurrency limit holds across threads

    def __init__(self, model: str, urls: list[str] | str, *, cache: RequestCache | None = None, concurrency: int = 8,
                 timeout: float | None = None, speed: ServerSpeed | None = None, retries: int = 4, backoff: float = 0.5, dialect: Dialect = "vllm",
                 allow_remote: bool = False, api_key: str | None = None, max_batch: int | None = None) -> None:
        super().__init__(cache=cache, max_batch=max_batch or max(64, 4 * concurrency))
        if isinstance(urls, str):
            urls = [urls]
        if not urls:
            raise ValueError("ServerEngine needs at least one base URL, e.g. http://127.0.0.1:8000/v1")
        if dialect not in ("vllm", "sglang"):
            raise ValueError(f"dialect must be 'vllm' or 'sglang', got {dialect!r}")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.model = model
        self.urls = [normalize_base_url(u) for u in urls]
        for u in self.urls:
            if not u.startswith(("http://", "https://")):
                raise ValueError(f"server URL {u!r} must start with http:// or https://")
        self.concurrency = concurrency
        self.timeout = timeout
        self.speed = speed or ServerSpeed()
        self.retries = retries
        self.backoff = backoff
        self.dialect: Dialect = dialect
        self.api_key = api_key or os.environ.get("MEDPROG_API_KEY")
        remote = [u for u in self.urls if not is_local_host(urlsplit(u).hostname or "")]
        if remote and not allow_remote:
            raise RemoteEndpointError(
                f"{', '.join(remote)} is not on the loopback or a private network; patient text would leave "
                f"this machine. Pass --allow-remote (allow_remote=True) if that is intended.")
        if allow_remote:
            for u in self.urls:
                log.info("medprog openai engine: prompts for model %r are sent to %s%s", model, u,
                         " (remote endpoint)" if u in remote else "")
        self._slots = threading.BoundedSemaphore(concurrency)
        self._rr = itertools.count()
        self._lock = threading.Lock()
        self._down_until: dict[str, float] = {}
        self._checked = False
        self._client: httpx.Client | None = None
        self.url_stats: dict[str, dict[str, int]] = {u: {"ok": 0, "failed": 0} for u in self.urls}
        self.retried = 0

    # plumbing ---------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        # replicas of one model answer alike: the URLs are not part of the cache key
        return {"engine": "openai", "model": self.model, "dialect": self.dialect}

    @property
    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
                n = self.concurrency * len(self.urls) + 4
                # trust_env=False: never route patient text through a proxy from the environment
                timeout = httpx.Timeout(self.timeout or self.speed.floor_s, connect=CONNECT_TIMEOUT_S)
                self._client = httpx.Client(headers=headers, trust_env=False, timeout=timeout,
                                            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n))
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _next_url(self) -> str:
        now = time.monotonic()
        for _ in range(len(self.urls)):
            url = self.urls[next(self._rr) % len(self.urls)]
            if self._down_until.get(url, 0.0) <= now:
                return url
        return self.urls[next(self._rr) % len(self.urls)]  # all marked down: try anyway

    # health -----------------------------------------------------------------------------
    def check(self) -> None:
        """Ping ``/models`` at every URL; raise `ServerUnreachableError` if none answers or none serves the model."""
        problems, served = [], False
        for url in self.urls:
            try:
                r = self.client.get(f"{url}/models", timeout=min(self.timeout or CONNECT_TIMEOUT_S, CONNECT_TIMEOUT_S))
            except httpx.HTTPError as e:
                problems.append(f"{url}: {_describe(e)}")
                continue
            if r.status_code in (401, 403):
                raise EngineError(f"{url}: the server refused the API key (HTTP {r.status_code}); "
                                  f"set MEDPROG_API_KEY or pass api_key")
            if r.status_code != 200:
                problems.append(f"{url}/models: HTTP {r.status_code}")
                continue
            try:
                ids = [m.get("id") for m in r.json().get("data", [])]
            except (ValueError, AttributeError):
                ids = []
            if ids and self.model not in ids:
                raise EngineError(f"{url} serves {ids}, not {self.model!r}: use openai:{ids[0]}@{url}")
            served = True
        if not served:
            raise ServerUnreachableError(f"no OpenAI-compatible server answers at {', '.join(self.urls)} "
                                         f"({'; '.join(problems)}); {VLLM_HINT}")
        for p in problems:
            log.warning("medprog openai engine: %s (requests will go to the other URLs)", p)
        self._checked = True

    def _ensure_checked(self) -> None:
        if not self._checked:
            self.check()

    # generation -------------------------------------------------------------------------
    def _body(self, messages: Messages, c: Constraint | None, sampling: Sampling) -> dict[str, Any]:
        max_tokens = sampling.max_tokens
        if isinstance(c, TaggedConstraint):
            # the copy is forced by the regex; leave room for the text and its tags (servers clamp to the context)
            max_tokens = max(max_tokens, 2 * len(c.text) + 64)
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                                "temperature": sampling.temperature, "top_p": sampling.top_p}
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if self.dialect == "vllm":
            body["spaces_between_special_tokens"] = False
        body.update(request_fields(c, self.dialect))
        return body

    def request_timeout(self, body: dict[str, Any], c: Constraint | None) -> float:
        """Seconds one request may take: fixed ``timeout``, else sized from its work (prompt ≈ chars / 3 tokens)."""
        if self.timeout is not None:
            return self.timeout
        prompt_tokens = sum(len(m.get("content") or "") for m in body["messages"]) // 3
        return self.speed.timeout_for(prompt_tokens, requested_tokens(c, int(body["max_tokens"])))

    def _post(self, url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One HTTP attempt; raises `_Retryable` or `EngineError`."""
        try:
            with self._slots:
                t0 = time.perf_counter()
                r = self.client.post(f"{url}/chat/completions", json=body,
                                     timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S))
                elapsed = time.perf_counter() - t0
        except httpx.ConnectError as e:
            raise _Retryable(f"{url}: {_describe(e)}", refused=True) from e
        except (httpx.TimeoutException, httpx.TransportError) as e:
            raise _Retryable(f"{url}: {_describe(e)}") from e
        if r.status_code == 429 or r.status_code >= 500:
            raise _Retryable(f"{url}: HTTP {r.status_code} {_server_message(r)}",
                             retry_after=_retry_after(r.headers.get("retry-after")))
        if r.status_code != 200:
            raise EngineError(f"{url}: HTTP {r.status_code} {_server_message(r)}")
        try:
            reply = r.json()
        except ValueError as e:
            raise EngineError(f"{url}: reply is not JSON") from e
        usage = reply.get("usage") if isinstance(reply, dict) else None
        self.speed.observe(int((usage or {}).get("completion_tokens") or 0), elapsed)
        return reply

    def _one(self, messages: Messages, c: Constraint | None, sampling: Sampling) -> Completion:
        body = self._body(messages, c, sampling)
        timeout = self.request_timeout(body, c)
        errors: list[str] = []
        reply: dict[str, Any] | None = None
        for attempt in range(self.retries + 1):
            url = self._next_url()
            try:
                reply = self._post(url, body, timeout)
                with self._lock:
                    self.url_stats[url]["ok"] += 1
                    self._down_until.pop(url, None)
                break
            except EngineError as e:
                with self._lock:
                    self.url_stats[url]["failed"] += 1
                return Completion(error=str(e), finish_reason="error")
            except _Retryable as e:
                errors.append(str(e))
                with self._lock:
                    self.url_stats[url]["failed"] += 1
                    if e.refused:
                        self._down_until[url] = time.monotonic() + DOWN_COOLDOWN_S
                if attempt == self.retries:
                    break
                with self._lock:
                    self.retried += 1
                healthy_left = any(self._down_until.get(u, 0.0) <= time.monotonic() for u in self.urls)
                if e.refused and healthy_left:
                    continue  # fail over to another replica at once
                delay = self.backoff * 2 ** attempt * (1 + 0.25 * random.random())
                if e.retry_after is not None:
                    delay = max(delay, min(e.retry_after, RETRY_AFTER_CAP_S))
                time.sleep(delay)
        if reply is None:
            return Completion(error=f"request failed after {self.retries + 1} attempts: {errors[-1]}",
                              finish_reason="error")
        return self._completion(reply, c)

    def _completion(self, reply: dict[str, Any], c: Constraint | None) -> Completion:
        try:
            choice = reply["choices"][0]
            text = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return Completion(error=f"malformed reply from server: no choices[0].message.content "
                                    f"(keys: {sorted(reply) if isinstance(reply, dict) else type(reply).__name__})",
                              finish_reason="error")
        usage = reply.get("usage") or {}
        out = Completion(text=text or "", prompt_tokens=int(usage.get("prompt_tokens") or 0),
                         completion_tokens=int(usage.get("completion_tokens") or 0),
                         finish_reason=str(choice.get("finish_reason") or "stop"))
        if text is None:
            out.error = "server returned no content"
        elif c is not None:
            try:
                check_text(c, text)
            except ConstraintViolation as err:
                out.error = f"constraint not met ({out.finish_reason}): {err}"
        return out

    def _generate(self, prompts: list[Messages], constraints: list[Constraint | None],
                  sampling: Sampling) -> list[Completion]:
        self._ensure_checked()
        if len(prompts) == 1:
            return [self._safe_one(prompts[0], constraints[0], sampling)]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts)),
                                thread_name_prefix="medprog-openai") as pool:
            return list(pool.map(lambda pc: self._safe_one(pc[0], pc[1], sampling), zip(prompts, constraints)))

    def _safe_one(self, messages: Messages, c: Constraint | None, sampling: Sampling) -> Completion:
        try:
            return self._one(messages, c, sampling)
        except Exception as e:  # a bug or an odd reply must still be a per-call error, never a crash
            return Completion(error=f"{type(e).__name__}: {e}", finish_reason="error")


def _describe(e: Exception) -> str:
    if isinstance(e, httpx.ConnectError):
        return f"connection refused or failed ({e})"
    if isinstance(e, httpx.TimeoutException):
        return f"timed out ({type(e).__name__})"
    return f"{type(e).__name__}: {e}"


def _server_message(r: httpx.Response) -> str:
    try:
        body = r.json()
        msg = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(msg, dict):
            msg = msg.get("message", msg)
        return str(msg)[:500]
    except ValueError:
        return r.text[:500]


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None

