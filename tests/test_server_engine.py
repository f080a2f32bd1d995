"""`openai:` engine against a tiny in-process fake OpenAI server (fast; no vLLM needed)."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dspy
import pytest
from pydantic import BaseModel

from medprog.engines.base import EngineError, Sampling
from medprog.engines.constraints import ChoiceConstraint, JsonConstraint, TaggedConstraint, tagged_regex
from medprog.engines.server import (
    RemoteEndpointError,
    ServerEngine,
    ServerUnreachableError,
    normalize_base_url,
    request_fields,
)
from medprog.engines.server_timing import ServerSpeed
from medprog.engines.spec import make_engine
from medprog.engines.vllm_server import free_port
from medprog.signatures.adapter import MedprogAdapter
from medprog.signatures.base import Signature

MSGS = [{"role": "user", "content": "Patient secret: started on aspirin."}]
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["A", "B"]}},
          "required": ["answer"], "additionalProperties": False}
JSON_C = JsonConstraint(json_schema=SCHEMA)


class FakeServer:
    """An OpenAI-compatible stub: scripted replies first, then ``content`` (a string or a function of the body)."""

    def __init__(self, model: str = "m") -> None:
        self.model = model
        self.script: list[tuple[int, Any, dict[str, str], float]] = []
        self.content: Any = '{"answer":"A"}'
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.peak = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:
                if self.path.endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": fake.model, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append(body)
                    fake.in_flight += 1
                    fake.peak = max(fake.peak, fake.in_flight)
                    scripted = fake.script.pop(0) if fake.script else None
                try:
                    if scripted:
                        status, payload, headers, delay = scripted
                        time.sleep(delay)
                        return self._send(status, payload, headers)
                    time.sleep(fake.delay)
                    text = fake.content(body) if callable(fake.content) else fake.content
                    self._send(200, {"id": "x", "object": "chat.completion", "model": fake.model,
                                     "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant", "content": text}}],
                                     "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}})
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def fake():
    with FakeServer() as f:
        yield f


def engine_for(*urls: str, **kw: Any) -> ServerEngine:
    kw = {"retries": 2, "backoff": 0.01, "timeout": 5.0, **kw}
    return ServerEngine("m", list(urls), cache=None, **kw)


# request shape ------------------------------------------------------------------------------
def test_request_fields_per_constraint_and_dialect():
    rf = request_fields(JSON_C)["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"] == SCHEMA and rf["json_schema"]["strict"]
    assert request_fields(ChoiceConstraint(choices=["A", "B"])) == {"structured_outputs": {"choice": ["A", "B"]}}
    tc = TaggedConstraint(text="Started aspirin.", tags=["med"])
    assert request_fields(tc) == {"structured_outputs": {"regex": tagged_regex(tc)}}
    assert request_fields(tc, "sglang") == {"regex": tagged_regex(tc)}
    assert request_fields(ChoiceConstraint(choices=["A", "B+"]), "sglang") == {"regex": r"(?:A|B\+)"}
    assert request_fields(JSON_C, "sglang") == request_fields(JSON_C, "vllm")
    assert request_fields(None) == {}


def test_base_url_normalised():
    assert normalize_base_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert normalize_base_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"


def test_valid_reply_usage_and_body(fake):
    e = engine_for(fake.url)
    (r,) = e.generate([MSGS], [JSON_C], Sampling(max_tokens=32, seed=3))
    assert r.error is None and r.text == '{"answer":"A"}'
    assert (r.prompt_tokens, r.completion_tokens) == (11, 5)
    body = fake.requests[0]
    assert body["model"] == "m" and body["messages"] == MSGS and body["max_tokens"] == 32 and body["seed"] == 3
    assert body["temperature"] == 0.0 and "response_format" in body
    total = e.ledger.total
    assert (total.calls, total.prompt_tokens, total.completion_tokens, total.errors) == (1, 11, 5, 0)


def test_make_engine_builds_server_engine(fake):
    e = make_engine(f"openai:m@{fake.url}", cache_dir=False, retries=0)
    assert isinstance(e, ServerEngine) and e.urls == [fake.url]
    e.check()


# retries and errors ------------------------------------------------------------------------------
def test_retry_on_429_then_success(fake):
    fake.script = [(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}, 0.0)]
    e = engine_for(fake.url)
    (r,) = e.generate([MSGS], [JSON_C])
    assert r.error is None and len(fake.requests) == 2 and e.retried == 1


def test_exponential_backoff_on_503(fake):
    fake.script = [(503, {"error": {"message": "busy"}}, {}, 0.0)] * 2
    e = engine_for(fake.url, backoff=0.1, retries=3)
    t0 = time.perf_counter()
    (r,) = e.generate([MSGS], [JSON_C])
    elapsed = time.perf_counter() - t0
    assert r.error is None and len(fake.requests) == 3
    assert elapsed >= 0.1 + 0.2  # 0.1 * 2**0, then 0.1 * 2**1


def test_persistent_5xx_is_a_per_call_error_not_an_exception(fake):
    fake.script = [(500, {"error": {"message": "boom"}}, {}, 0.0)] * 3
    e = engine_for(fake.url, retries=2)
    (r,) = e.generate([MSGS], [JSON_C])
    assert r.error is not None and "3 attempts" in r.error and "HTTP 500" in r.error and "boom" in r.error
    assert e.ledger.total.errors == 1
    fake.script = [(500, {"error": {"message": "boom"}}, {}, 0.0)] * 3
    with pytest.raises(Exception, match="HTTP 500 boom"):  # through dspy it is an LM error, as dspy expects
        e.as_lm()(messages=MSGS)


def test_client_error_is_not_retried(fake):
    fake.script = [(400, {"error": {"message": "bad regex"}}, {}, 0.0)]
    e = engine_for(fake.url)
    (r,) = e.generate([MSGS], [JSON_C])
    assert "HTTP 400" in r.error and "bad regex" in r.error and len(fake.requests) == 1


def test_timeout_is_retried_then_reported(fake):
    fake.delay = 1.0
    e = engine_for(fake.url, timeout=0.2, retries=1)
    t0 = time.perf_counter()
    (r,) = e.generate([MSGS], [JSON_C])
    assert r.error is not None and "timed out" in r.error
    assert len(fake.requests) == 2 and time.perf_counter() - t0 < 3.0


def test_malformed_reply_is_an_error(fake):
    fake.script = [(200, {"id": "x", "choices": []}, {}, 0.0)]
    e = engine_for(fake.url)
    (r,) = e.generate([MSGS], [JSON_C])
    assert r.error is not None and "malformed reply" in r.error


# validation -------------------------------------------------------------------------------
def test_constraint_violation_is_per_call(fake):
    fake.content = lambda body: "maybe" if "structured_outputs" in body else '{"answer":"C"}'
    e = engine_for(fake.url)
    res = e.generate([MSGS, MSGS, MSGS], [ChoiceConstraint(choices=["yes", "no"]), JSON_C, None])
    assert "constraint not met" in res[0].error and "'maybe' is not one of" in res[0].error
    assert "constraint not met" in res[1].error and "not in ['A', 'B']" in res[1].error
    assert res[2].error is None and res[2].text == '{"answer":"C"}'  # no constraint, nothing to check


def test_tagged_reply_validated(fake):
    tc = TaggedConstraint(text="Started aspirin today.", tags=["med"])
    fake.content = lambda body: "Started <med>aspirin</med> today."
    e = engine_for(fake.url)
    assert e.generate([MSGS], [tc])[0].error is None
    fake.content = lambda body: "Started <med>aspirin today."
    assert "constraint not met" in e.generate([MSGS], [tc])[0].error
    fake.content = lambda body: "Started <med>aspirin</med> tomorrow."
    assert "does not copy the source" in e.generate([MSGS], [tc])[0].error


class Answer(BaseModel):
    answer: str


class QA(Signature):
    """Answer."""

    question: str = dspy.InputField()
    result: Answer = dspy.OutputField()


def test_dspy_predict_through_adapter(fake):
    fake.content = '{"result":{"answer":"B"}}'
    e = engine_for(fake.url)
    with dspy.context(lm=e.as_lm(), adapter=MedprogAdapter()):
        pred = dspy.Predict(QA)(question="Which?")
    assert pred.result == Answer(answer="B")
    assert fake.requests[0]["response_format"]["json_schema"]["schema"]["properties"]["result"]


# scale-out --------------------------------------------------------------------------------
def test_round_robin_over_urls():
    with FakeServer() as a, FakeServer() as b:
        e = engine_for(a.url, b.url, concurrency=2)
        res = e.generate([MSGS] * 8, [JSON_C] * 8)
        assert all(r.error is None for r in res)
        assert len(a.requests) == 4 and len(b.requests) == 4


def test_dead_second_url_fails_over(fake):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    e = engine_for(fake.url, dead, concurrency=2, retries=2)
    res = e.generate([MSGS] * 6, [JSON_C] * 6)
    assert [r.error for r in res] == [None] * 6
    assert e.url_stats[dead]["failed"] >= 1 and e.url_stats[fake.url]["ok"] == 6


def test_concurrency_limit(fake):
    fake.delay = 0.2
    e = engine_for(fake.url, concurrency=3)
    t0 = time.perf_counter()
    res = e.generate([MSGS] * 9, [JSON_C] * 9)
    assert all(r.error is None for r in res)
    assert fake.peak == 3
    assert time.perf_counter() - t0 < 9 * 0.2  # ran in parallel


def test_concurrency_limit_holds_across_threads(fake):
    fake.delay = 0.1
    e = engine_for(fake.url, concurrency=2)
    e.check()
    threads = [threading.Thread(target=e.generate, args=([MSGS], [JSON_C])) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.peak == 2 and len(fake.requests) == 6


# reachability and privacy ---------------------------------------------------------------------
def test_unreachable_server_on_first_call_is_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}/v1"
    e = engine_for(url)
    with pytest.raises(ServerUnreachableError, match="vllm serve") as info:
        e.generate([MSGS], [JSON_C])
    assert url in str(info.value)
    with pytest.raises(ServerUnreachableError, match=url):
        e.check()


def test_check_names_the_served_model(fake):
    e = ServerEngine("other", [fake.url])
    with pytest.raises(EngineError, match="serves \\['m'\\]"):
        e.check()


@pytest.mark.parametrize("url", ["https://8.8.8.8/v1", "http://93.184.216.34:8000/v1"])
def test_remote_endpoint_refused(url):
    with pytest.raises(RemoteEndpointError, match="allow-remote"):
        ServerEngine("m", [url])
    with pytest.raises(RemoteEndpointError):
        make_engine(f"openai:m@http://127.0.0.1:8000/v1,{url}", cache_dir=False)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/v1", "http://localhost:8000/v1", "http://10.1.2.3:8000/v1",
                                 "http://192.168.0.7/v1", "http://[::1]:8000/v1"])
def test_local_and_private_endpoints_allowed(url):
    ServerEngine("m", [url])  # no connection is made when constructing


def test_allowed_remote_logs_destination_not_text(fake, caplog):
    with caplog.at_level(logging.DEBUG):
        e = ServerEngine("m", ["https://8.8.8.8/v1"], allow_remote=True)
        assert any("https://8.8.8.8/v1" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
        e2 = engine_for(fake.url, allow_remote=True)
        e2.generate([MSGS], [JSON_C])
    assert not any("Patient secret" in r.getMessage() for r in caplog.records)
    assert not any('"answer"' in r.getMessage() for r in caplog.records)
    e.close()


def test_vllm_engine_without_vllm_is_a_clear_error(tmp_path):
    import importlib.util

    from medprog.engines.vllm_engine import VLLMNotInstalledError

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(VLLMNotInstalledError, match="setup_vllm.sh"):
        make_engine(f"vllm:{tmp_path}", cache_dir=False)


# timeouts follow the work asked for --------------------------------------------------------
def test_timeout_follows_the_tokens_requested(fake):
    fake.delay = 0.6
    slow = ServerSpeed(assumed_tok_s=10.0, floor_s=0.2, slack=1.0)
    e = engine_for(fake.url, timeout=None, speed=slow, retries=0)
    (short,) = e.generate([MSGS], [JSON_C], Sampling(max_tokens=1))  # 1 token at 10 tok/s: 0.2 s floor
    (long,) = e.generate([MSGS], [JSON_C], Sampling(max_tokens=40))  # 40 tokens at 10 tok/s: 4 s
    assert short.error is not None and "timed out" in short.error
    assert long.error is None and long.text == '{"answer":"A"}'
    body = {"messages": MSGS, "max_tokens": 1000}
    assert e.request_timeout(body, JSON_C) == pytest.approx(len(MSGS[0]["content"]) // 3 / 200 + 100, rel=1e-3)
    assert e.request_timeout(body, ChoiceConstraint(choices=["yes", "no"])) < 1.0  # a choice is a few tokens
    assert engine_for(fake.url, timeout=7.0).request_timeout(body, JSON_C) == 7.0  # a fixed timeout stays fixed


def test_default_timeout_is_sized_from_work_with_a_floor(fake):
    e = engine_for(fake.url, timeout=None)
    choice = e.request_timeout({"messages": MSGS, "max_tokens": 1024}, ChoiceConstraint(choices=["A", "B"]))
    assert choice == e.speed.floor_s == 30.0
    # a 1024-token expert list at the assumed 10 tok/s gets minutes, not a fixed 60 s
    assert e.request_timeout({"messages": MSGS, "max_tokens": 1024}, JSON_C) > 300


def test_measured_speed_replaces_the_assumed_one(fake):
    reply = {"id": "x", "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": '{"answer":"B"}'}}],
             "usage": {"prompt_tokens": 10, "completion_tokens": 100}}
    fake.script = [(200, reply, {}, 0.5)]
    e = engine_for(fake.url, timeout=None, speed=ServerSpeed(assumed_tok_s=1.0))
    e.generate([MSGS], [JSON_C])  # 100 tokens in ~0.5 s
    assert e.speed.measured == 1 and 50 < e.speed.decode_tok_s < 210
    e.generate([MSGS], [JSON_C])  # the default reply has 5 completion tokens: too few to measure
    assert e.speed.measured == 1
    assert e.speed.timeout_for(0, 2000) == pytest.approx(3.0 * 2000 / e.speed.decode_tok_s)
