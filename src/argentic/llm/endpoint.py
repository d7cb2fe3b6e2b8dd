"""One OpenAI-compatible server: its client, its bound on concurrent requests, retries and error mapping.

Every request goes through :meth:`Endpoint.run`, or :meth:`Endpoint.chunks` for a streamed chat
completion: at most ``max_concurrency`` at once, a timeout, retries with exponential backoff and
jitter on connection errors, 408, 429 and 5xx, and the SDK's exceptions turned into argentic's (with
what to do about them).

The timeout of a chat completion bounds each wait for progress, not the whole answer, so a long
answer that keeps coming is never cut off. A stream's progress is its chunks. A whole answer asked in
one response (cheaper for the server than a stream) is watched through vLLM's ``/metrics``: while its
count of prompt and generated tokens grows, the server is working through its batch, our request
included. A server without that count is asked for a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

import openai

from argentic.backoff import backoff_delay
from argentic.errors import LLMError, LLMRequestError, LLMTimeoutError, LLMUnavailableError
from argentic.llm.local_server import server_root
from argentic.llm.wire import text_only_refusal
from argentic.observability import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})

# vLLM's counters of the tokens it has processed and generated, over all requests.
WORK_COUNTERS = ("vllm:prompt_tokens_total", "vllm:generation_tokens_total")

START_HINT = (
    "Start a server with `argentic serve` (it builds a small CPU model when none is configured), or "
    "`vllm serve MODEL --enable-auto-tool-choice --tool-call-parser hermes`, or point "
    "llm.vllm_base_url (ARGENTIC_LLM__VLLM_BASE_URL) at a running one."
)


def normalize_base_url(url: str, *, vllm: bool) -> str:
    """``url`` without a trailing slash; for vLLM, ending in ``/v1`` (added when missing)."""
    url = url.strip().rstrip("/")
    if vllm and not url.endswith("/v1"):
        url += "/v1"
    return url


class Endpoint:
    """A client for one server, shared by a provider and its per-agent override copies."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        max_concurrency: int = 64,
        retry_delay_s: float = 0.5,
        retry_max_delay_s: float = 8.0,
        vllm: bool = True,
    ) -> None:
        self.base_url = normalize_base_url(base_url, vllm=vllm)
        self.root = server_root(self.base_url)
        self.vllm = vllm
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.retry_delay_s = retry_delay_s
        self.retry_max_delay_s = retry_max_delay_s
        self.max_concurrency = max_concurrency
        self.api_key = api_key
        # Retries and timeouts are ours (to map errors and bound them); the SDK must not retry, and
        # its own timeout is only a backstop that never fires before ours.
        self.client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=api_key or "EMPTY", max_retries=0, timeout=2 * timeout_s
        )
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._counts_work: bool | None = None  # whether /metrics has WORK_COUNTERS; probed once
        self._probe = asyncio.Lock()  # so that the first calls at once probe once between them

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """The delay before retry ``attempt`` (0-based), at least what the server's Retry-After asks."""
        delay = backoff_delay(attempt, self.retry_delay_s, self.retry_max_delay_s)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_max_delay_s * 4))
        return delay

    async def run(
        self,
        call: Callable[[], Awaitable[T]],
        *,
        what: str,
        tools_sent: bool = False,
        while_working: bool = False,
    ) -> T:
        """``call()`` under the concurrency bound, with a timeout, retries and mapped errors.

        ``while_working``: the timeout bounds each stretch in which the server does no work at all
        (see :meth:`work_done`), not the whole call.
        """
        attempt = 0
        while True:
            try:
                async with self._semaphore:
                    if while_working:
                        return await self._while_working(call(), what)
                    async with asyncio.timeout(self.timeout_s):
                        return await call()
            except LLMTimeoutError:
                raise
            except TimeoutError as exc:
                raise LLMTimeoutError(
                    f"{what}: no answer from {self.base_url} within {self.timeout_s:.0f}s "
                    "(raise llm.timeout_s, lower max_tokens, or check the server's load)"
                ) from exc
            except openai.APIError as exc:
                delay = self.retry_delay(exc, attempt, what=what, tools_sent=tools_sent)
                attempt += 1
                await asyncio.sleep(delay)

    def retry_delay(self, exc: openai.APIError, attempt: int, *, what: str, tools_sent: bool) -> float:
        """How long to wait before retrying after ``exc`` (retry ``attempt``, 0-based); raises the
        mapped error when it is not worth a retry or the retries are spent."""
        error = self.map_error(exc, what=what, tools_sent=tools_sent)
        if not self.retryable(exc) or attempt >= self.max_retries:
            raise error from exc
        delay = self.backoff(attempt, _retry_after(exc))
        log.warning("%s; retry %d/%d in %.2fs", error, attempt + 1, self.max_retries, delay)
        metrics.model_retry(error.code)
        return delay

    async def counts_work(self) -> bool:
        """Whether the server's ``/metrics`` counts the tokens it processes (vLLM's does). Asked
        again later while the server cannot be reached."""
        if self._counts_work is not None:
            return self._counts_work
        if not self.vllm:
            self._counts_work = False
            return False
        async with self._probe:
            if self._counts_work is None:
                try:
                    text = await self._metrics_text()
                except openai.APIStatusError:  # it answered: it has no /metrics
                    self._counts_work = False
                except (TimeoutError, openai.APIError):
                    return False
                else:
                    self._counts_work = work_in(text) is not None
        return self._counts_work

    async def work_done(self) -> float | None:
        """The tokens the server has processed and generated so far, over all requests (from
        ``/metrics``, within the timeout); None when it does not say or cannot be reached."""
        try:
            return work_in(await self._metrics_text())
        except (TimeoutError, openai.APIError):
            return None

    async def _metrics_text(self) -> str:
        async with asyncio.timeout(self.timeout_s):
            return await self.client.get(self.root + "/metrics", cast_to=str)

    async def _while_working(self, call: Awaitable[T], what: str) -> T:
        """``call``'s result, waited for as long as the server's work count grows at least once in
        every ``timeout_s``."""
        task = asyncio.ensure_future(call)
        seen: float | None = None
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.timeout_s)
                if done:
                    return task.result()
                work = await self.work_done()
                if work is None or work == seen:
                    raise LLMTimeoutError(
                        f"{what}: no answer from {self.base_url}, and it did no work for "
                        f"{self.timeout_s:.0f}s (llm.timeout_s bounds each wait; check the server)"
                    )
                seen = work
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def chunks(
        self, body: dict[str, Any], *, what: str, tools_sent: bool = False
    ) -> AsyncGenerator[Any, None]:
        """The chunks of the streamed chat completion ``body`` asks for, under the concurrency bound.

        Failures before the first chunk are retried like :meth:`run`'s; then each next chunk must
        come within the timeout. The wait for a turn under the bound is not timed.
        """
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        attempt = 0
        while True:
            async with self._semaphore:
                try:
                    stream, first = await self._open_stream(body, what)
                except openai.APIError as exc:
                    delay = self.retry_delay(exc, attempt, what=what, tools_sent=tools_sent)
                else:
                    try:
                        while first is not None:
                            yield first
                            first = await self._next_chunk(stream, what, tools_sent)
                    finally:
                        await stream.close()
                    return
            attempt += 1
            await asyncio.sleep(delay)

    async def _next_chunk(self, stream: Any, what: str, tools_sent: bool) -> Any:
        """The stream's next chunk within the timeout, or None at its end."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await stream.__anext__()
        except StopAsyncIteration:
            return None
        except TimeoutError as exc:
            raise LLMTimeoutError(
                f"{what}: no new token from {self.base_url} for {self.timeout_s:.0f}s "
                "(llm.timeout_s bounds each wait; check the server's load)"
            ) from exc
        except openai.APIError as exc:
            raise self.map_error(exc, what=what, tools_sent=tools_sent) from exc

    async def _open_stream(self, body: dict[str, Any], what: str) -> tuple[Any, Any]:
        """The stream and its first chunk (None if it ended at once), within the timeout."""
        stream: Any = None
        try:
            async with asyncio.timeout(self.timeout_s):
                stream = await self.client.chat.completions.create(**body)
                try:
                    return stream, await stream.__anext__()
                except StopAsyncIteration:
                    return stream, None
        except BaseException as exc:
            if stream is not None:
                await stream.close()
            if isinstance(exc, TimeoutError):
                raise LLMTimeoutError(
                    f"{what}: {self.base_url} did not start answering within {self.timeout_s:.0f}s "
                    "(raise llm.timeout_s, or check the server's load)"
                ) from exc
            raise

    @staticmethod
    def retryable(exc: openai.APIError) -> bool:
        if isinstance(exc, openai.APIConnectionError):  # includes the SDK's own timeouts
            return True
        return isinstance(exc, openai.APIStatusError) and exc.status_code in RETRY_STATUS

    def map_error(self, exc: BaseException, *, what: str, tools_sent: bool = False) -> LLMError:
        """argentic's exception for an SDK exception, with the fix where there is one."""
        if isinstance(exc, openai.APITimeoutError):
            return LLMTimeoutError(f"{what}: {self.base_url} timed out ({exc})")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return LLMUnavailableError(
                f"{what}: cannot reach the model server at {self.base_url} ({cause}). {START_HINT}"
            )
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = _server_message(exc)
            if status == 400 and tools_sent and _mentions_tool_setup(detail):
                return LLMRequestError(
                    f"{what}: the server at {self.base_url} refuses requests with tools: it was started "
                    "without `--enable-auto-tool-choice --tool-call-parser <parser>` (hermes for Gemma, "
                    "Qwen and Hermes models). Restart it with those flags; `argentic serve` adds them "
                    f"(llm.server.tool_call_parser). Server said: {detail}",
                    status_code=status,
                )
            lowered = detail.lower()
            if status == 400 and "at most" in lowered and ("image" in lowered or "audio" in lowered):
                kind = "audio clips" if "audio" in lowered else "images"
                key = "audio" if "audio" in lowered else "image"
                if "at most 0 " in lowered:  # vLLM's limit for a modality the model does not take
                    return LLMRequestError(
                        f"{what}: the model at {self.base_url} takes no {kind} ({detail}). Serve a model "
                        "that does (google/gemma-3n-E4B-it takes images and audio) or ask without them.",
                        status_code=status,
                    )
                return LLMRequestError(
                    f"{what}: too many {kind} for one prompt ({detail}). Send fewer, or start the server "
                    f"with a higher limit: llm.server.limit_mm_per_prompt: {{{key}: N}}",
                    status_code=status,
                )
            refusal = text_only_refusal(detail, f"at {self.base_url}") if status == 400 else None
            if refusal is not None:
                return LLMRequestError(f"{what}: {refusal}", status_code=status)
            if status == 404 and "model" in detail.lower():
                return LLMRequestError(
                    f"{what}: {detail} Check llm.vllm_model_name "
                    f"(None discovers it from {self.base_url}/models).",
                    status_code=status,
                )
            if status == 404:
                return LLMRequestError(
                    f"{what}: {self.base_url} answered 404 Not Found: is this the server's OpenAI base URL? "
                    "For vLLM it is http://HOST:PORT/v1.",
                    status_code=status,
                )
            if status in (401, 403):
                return LLMRequestError(
                    f"{what}: {self.base_url} refused the API key ({status}): set llm.vllm_api_key "
                    "(vLLM's --api-key) or llm.api_key",
                    status_code=status,
                )
            return LLMRequestError(f"{what}: {self.base_url} answered {status}: {detail}", status_code=status)
        return LLMError(f"{what}: {exc}")

    async def get_text(self, path: str, *, what: str) -> str:
        """GET ``{root}{path}`` (``/health``, ``/metrics``, ``/version``) as text, through :meth:`run`."""
        url = self.root + path

        async def fetch() -> str:
            return await self.client.get(url, cast_to=str)

        return await self.run(fetch, what=what)

    async def model_ids(self) -> list[str]:
        async def fetch() -> list[str]:
            page = await self.client.models.list()
            return [model.id for model in page.data]

        return await self.run(fetch, what=f"listing the models at {self.base_url}/models")

    async def close(self) -> None:
        await self.client.close()


def prometheus_samples(text: str) -> dict[str, float]:
    """A Prometheus text exposition as ``{"name{labels}": value}``."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            samples[name] = float(value)
        except ValueError:
            continue
    return samples


def work_in(metrics: str) -> float | None:
    """The sum of vLLM's :data:`WORK_COUNTERS` in a ``/metrics`` text, None when it has none."""
    values = [v for k, v in prometheus_samples(metrics).items() if k.split("{", 1)[0] in WORK_COUNTERS]
    return sum(values) if values else None


def _server_message(exc: openai.APIStatusError) -> str:
    body: Any = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return exc.message


def _mentions_tool_setup(detail: str) -> bool:
    text = detail.lower()
    return "enable-auto-tool-choice" in text or "tool-call-parser" in text or "tool_call_parser" in text


def _retry_after(exc: openai.APIError) -> float | None:
    if not isinstance(exc, openai.APIStatusError):
        return None
    value = exc.response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
