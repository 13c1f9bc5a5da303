"""The completion endpoints, from a validated body to the response: prepare -> submit -> stream | collect.

    completions = Completions(repo, ServerMetrics(repo), max_tokens_limit=512, request_timeout_s=120)
    return await completions.serve(http_request, body, chat=False)     # inside a FastAPI route

prepare: route to a version, tokenize (chat template or a plain transcript), decide the length, check the limits
         and what the version's engine can do (4xx).
submit:  the engine's admission control (429 with Retry-After when the queue is full, 503 while draining).
stream:  server-sent events, one per text delta; collect: one JSON body when generation ends (`completion.py`).
Either way the request's status, tokens and latencies are recorded in the metrics once, at the end.
"""

from __future__ import annotations

import time

from fastapi import Request as HttpRequest
from fastapi.responses import Response, StreamingResponse

from labkit.serving import protocol as P
from labkit.serving.completion import Completion
from labkit.serving.metrics import Counter, Gauge, Histogram, Registry
from labkit.serving.protocol import ApiError
from labkit.serving.repository import Deployment, ModelRepository
from labkit.serving.request import Request, SamplingParams


class ServerMetrics(Registry):
    """The server's Prometheus metrics: requests by status, tokens, latencies (s), queue depth and batch size."""

    def __init__(self, repo: ModelRepository):
        super().__init__()

        def per_version(read):
            return lambda: {(("model", m), ("version", v)): read(d) for (m, v), d in list(repo.deployments.items())}

        self.requests = self.add(Counter("labkit_requests_total", "Requests by model, version and HTTP status"))
        self.tokens = self.add(Counter("labkit_generated_tokens_total", "Tokens generated"))
        self.ttft = self.add(Histogram("labkit_time_to_first_token_seconds", "Arrival to first token"))
        self.tpot = self.add(Histogram("labkit_time_per_output_token_seconds", "Mean gap between later tokens"))
        self.e2e = self.add(Histogram("labkit_request_duration_seconds", "Arrival to last token"))
        self.add(Gauge("labkit_queue_depth", "Requests waiting for a batch slot",
                       per_version(lambda d: d.engine.queue_depth)))
        self.add(Gauge("labkit_running_batch_size", "Requests holding a batch slot",
                       per_version(lambda d: len(d.engine.running))))
        # counted by the engine since it started (read, not incremented here): a scrape before and after a load gives
        # its mean decode batch; an engine that runs its own loop ('hf-continuous') counts none
        self.add(Gauge("labkit_decode_steps_total", "Decode steps the engine ran",
                       per_version(lambda d: getattr(d.engine, "decode_steps", 0))))
        self.add(Gauge("labkit_decode_sequences_total", "Sequences summed over those decode steps",
                       per_version(lambda d: getattr(d.engine, "decode_sequences", 0))))

        def paged(key):  # the paged engine's KV cache (`PagedEngine.kv_report`); other engines have none
            return lambda: {(("model", m), ("version", v)): d.engine.kv_report()[key]
                            for (m, v), d in list(repo.deployments.items()) if hasattr(d.engine, "kv_report")}

        for key, help_ in (("blocks_used", "KV blocks referenced now"), ("blocks_total", "KV blocks in the pool"),
                           ("preemptions", "Sequences preempted (recomputed) so far"),
                           ("prefix_hit_rate", "Prompt tokens found in the prefix cache / looked up")):
            self.add(Gauge(f"labkit_kv_{key}", f"Paged engine: {help_}", paged(key)))

    def observe(self, req: Request, status: int, t0: float, **labels: str) -> None:
        """Record one finished HTTP request (`t0`: its arrival, perf_counter seconds)."""
        self.requests.inc(**labels, status=status)
        self.tokens.inc(len(req.tokens), **labels)
        now = time.perf_counter()
        if req.t_first is not None:
            self.ttft.observe(req.t_first - t0, **labels)
            self.e2e.observe(now - t0, **labels)
            if len(req.tokens) > 1:
                self.tpot.observe(((req.t_done or now) - req.t_first) / (len(req.tokens) - 1), **labels)


class Completions:
    """The completion endpoints' logic for one server; the routes call `serve`.

    Args:
        repo: the served models. metrics: where requests are counted.
        max_tokens_limit: the most new tokens one request may get. request_timeout_s: time per request (s).
    """

    def __init__(self, repo: ModelRepository, metrics: ServerMetrics, max_tokens_limit: int = 512,
                 request_timeout_s: float = 120.0):
        self.repo, self.metrics = repo, metrics
        self.max_tokens_limit, self.timeout_s = max_tokens_limit, request_timeout_s

    def route(self, model: str) -> Deployment:
        try:
            return self.repo.route(model)
        except KeyError:
            raise ApiError(404, f"model {model!r} not found; served models: {self.repo.models()}",
                           kind="not_found_error", param="model") from None

    def prepare(self, body: P.CompletionBody | P.ChatBody, chat: bool) -> tuple[Deployment, list[int], str]:
        """The version that serves this request, the prompt's token ids and the prompt text; ApiError if it cannot."""
        dep = self.route(body.model)
        if chat:
            ids, text = chat_prompt(dep.tokenizer, body.messages), ""
        elif isinstance(body.prompt, str):
            ids, text = dep.tokenizer(body.prompt)["input_ids"], body.prompt
        else:
            vocab = dep.engine.model.config.vocab_size
            if bad := [t for t in body.prompt if not 0 <= t < vocab]:
                raise ApiError(400, f"prompt token ids {bad[:5]} are outside the vocabulary (0..{vocab - 1})",
                               param="prompt")
            ids = body.prompt
            text = dep.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if not ids:
            raise ApiError(400, "the prompt is empty", param="messages" if chat else "prompt")
        return dep, list(ids), text

    def params(self, body: P.CompletionBody | P.ChatBody, chat: bool, dep: Deployment, prompt_tokens: int
               ) -> SamplingParams:
        """The request's SamplingParams: its length (see the bodies' docstrings) checked against the server's limit
        and the model's context, and what the version's engine can do (400 naming the field)."""
        room = dep.context - prompt_tokens
        if room < 1:
            raise ApiError(400, f"the prompt ({prompt_tokens} tokens) fills the context of {body.model!r} "
                                f"({dep.context} tokens): no room for a completion",
                           param="messages" if chat else "prompt")
        field = "max_completion_tokens" if chat and body.max_completion_tokens is not None else "max_tokens"
        asked = body.requested_tokens if chat else body.max_tokens
        if asked is not None and asked > self.max_tokens_limit:
            raise ApiError(400, f"{field}={asked} is over this server's limit of {self.max_tokens_limit}", param=field)
        if asked is not None and asked > room:
            raise ApiError(400, f"prompt ({prompt_tokens} tokens) + {field} ({asked}) exceeds the context of "
                                f"{body.model!r} ({dep.context} tokens)", param=field)
        engine = dep.engine
        k = ((body.top_logprobs or 0) if body.logprobs else None) if chat else body.logprobs  # alternatives
        params = SamplingParams(asked or min(self.max_tokens_limit, room), body.temperature, body.top_p,
                                seed=body.seed, logprobs=k, prompt_logprobs=not chat and body.echo and k is not None)
        if not params.greedy and not engine.supports_sampling:
            raise ApiError(400, f"scheduler {engine.name!r} serves greedy decoding only; send temperature=0",
                           param="temperature")
        if params.wants_logprobs and not engine.supports_logprobs:
            raise ApiError(400, f"'logprobs' is not supported by scheduler {engine.name!r} (it returns token ids "
                                "only); use 'sync', 'dynamic' or 'continuous'", param="logprobs")
        return params

    async def serve(self, http: HttpRequest, body: P.CompletionBody | P.ChatBody, chat: bool) -> Response:
        """Answer one completion request: server-sent events if `body.stream`, else one JSON body."""
        t0 = time.perf_counter()
        try:
            dep, ids, text = self.prepare(body, chat)
            params = self.params(body, chat, dep, len(ids))
        except ApiError as err:  # refused before the engine: counted here (later answers are counted by the flow)
            known = body.model in self.repo.models()  # an unknown name is not a label: it would grow without bound
            self.metrics.requests.inc(model=body.model if known else "-", version="-", status=err.status)
            raise
        flow = Completion(self, dep, ids, params, body, chat, t0, text)
        flow.submit()
        if body.stream:
            headers = {"Cache-Control": "no-cache", "X-Model-Version": flow.dep.version}
            return StreamingResponse(flow.events(), media_type="text/event-stream", headers=headers)
        return await flow.collect(http)


def chat_prompt(tokenizer, messages) -> list[int]:
    """The prompt's token ids: the tokenizer's chat template, or a plain "role: content" transcript without one.

    A `developer` message (OpenAI's newer name for system instructions) goes to the template as `system` unless
    the template knows the role: SmolLM2's would write it verbatim ("<|im_start|>developer", a role the model was
    not trained on) after its own default system prompt, which it adds before any first message but `system`.
    """
    template = getattr(tokenizer, "chat_template", None)
    if not template:  # a base model
        return tokenizer("".join(f"{m.role}: {m.text}\n" for m in messages) + "assistant:")["input_ids"]
    developer = "developer" in str(template)
    msgs = [{"role": "system" if m.role == "developer" and not developer else m.role, "content": m.text}
            for m in messages]
    return tokenizer.apply_chat_template(msgs, add_generation_prompt=True, return_dict=True)["input_ids"]
