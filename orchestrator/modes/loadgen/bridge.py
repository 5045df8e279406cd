"""The system under test LoadGen sees: its queries in, batches on the workers, completions back.

Threads:
- LoadGen's threads call `issue_query` (one query: its samples) and `flush_queries`. They only put
  a message on `inbox` and return: LoadGen times from its schedule, so a callback that blocked
  would delay the queries behind it and bill that to the system.
- One dispatcher thread owns every piece of state. It drains the inbox (so a burst of arrivals
  becomes one batch), hands an idle worker what is waiting (up to bs samples, or, in Server, once
  the oldest has waited `max_batch_wait_ms`, until LoadGen flushes: then nothing waits), and sleeps
  on the inbox. A batch's future puts itself on the same inbox when it completes, so arrivals and
  completions both wake it at once, with no polling.
- `QuerySamplesComplete` is called by the dispatcher; LoadGen accepts it from any thread.
- Generate (`options.generates`): a batch's events arrive on the target's thread while it runs; a
  request's first token goes to LoadGen's `FirstTokenComplete` there at once (with token latencies),
  and its end completes its sample there too, with its tokens and `n_tokens` (`_events`), so LoadGen
  measures TTFT when the token exists and TPOT when the request ends, not when its batch does. A
  running server's places (orchestrator/targets/endpoint_places.py) tell the same of each sample's
  HTTP request: its first chunk, then its text and the server's token count (`Output`).

Responses: every sample is completed with its prediction's bytes (the task's response, the same in
performance and accuracy mode, as MLPerf's rules ask), which LoadGen copies into its accuracy log in
accuracy mode and where its sampling picks it in performance mode. In accuracy mode a sample whose
example LoadGen issues again (MultiStream pads its last query with repeats) is not run twice: it is
completed with the first one's response, so every example is scored exactly once.

Faults, with Offline's policy (orchestrator/cluster/policy.py): a batch that fails is re-issued to
a worker that has not failed those samples where there is one (`may_run`), up to max_attempts; a
worker that fails FAILURES_IN_A_ROW batches in a row is taken out (`judge_worker`); user and
out-of-memory errors fail the run. A worker whose process died is suspect until a ping answers (Ray
restarted it and it is warm again) or fails (gone for good); a batch not back within
`batch_timeout_s` (a hung worker: alive, not answering) is abandoned as a death. Workers still being
brought back when a test starts (a find_peak probe after one that lost a worker) join it once they
are back, not before. LoadGen gets exactly one completion per sample: `outstanding` holds what it
still waits for. A run that cannot go on completes everything outstanding (and every later query)
with an empty response, so LoadGen's test ends, and the caller raises `error`.
"""

from __future__ import annotations

import array
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

from orchestrator.cluster.live import ScenarioMeter
from orchestrator.cluster.policy import RESTART_WAIT_S, decide, judge_worker, may_run
from orchestrator.cluster.pool import died_result
from orchestrator.targets.base import Target
from workers.contract import SampleBatch, ShardResult
from workers.errors import RunFailed, UserError, first_line
from workers.requests import RequestError, RequestRecord

ISSUE, FLUSH, DONE, PING, STOP, ABORT = "issue", "flush", "done", "ping", "stop", "abort"


@dataclass
class Query:
    issued_ns: int  # time.monotonic_ns() when LoadGen issued it
    remaining: int  # samples not completed yet


@dataclass
class Sample:
    response_id: int  # LoadGen's QuerySample.id
    index: int  # the example in the prepared data (QuerySample.index)
    query: Query
    attempt: int = 1
    failed_on: set[int] = field(default_factory=set)  # workers that failed it (policy.may_run)
    first_ns: int | None = None  # generate: when its first token reached the driver (told to LoadGen then)


@dataclass(frozen=True)
class Output:
    """A request's end as its `done` event tells it: `("done", row, output, gaps, input_tokens)` from
    an engine, whose output is its token ids; `("done", row, text, gaps, input_tokens, output_tokens,
    error)` from an endpoint (orchestrator/targets/endpoint_places.py), which sees text, not ids:
    the response's bytes, the server's token count and, where the request failed, its error."""

    output: list[int] | bytes
    gaps: list[float]  # seconds from the first token (or chunk) to each
    input_tokens: int
    output_tokens: int | None = None  # None: len(output) (token ids)
    error: RequestError | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.output) if self.output_tokens is None else self.output_tokens

    def data(self) -> array.array:
        """What LoadGen gets as the sample's data: the ids as int32, or the text's bytes."""
        return array.array("B", self.output) if isinstance(self.output, bytes) else array.array("i", self.output)


@dataclass
class BridgeOptions:
    pass_name: str
    bs: int
    max_batch_wait_s: float
    max_attempts: int
    accuracy: bool  # accuracy mode: every example scored once (repeats answered from the first)
    batch_timeout_s: float | None = None  # a batch not back within this long: its worker is abandoned
    generates: bool = False  # the task makes tokens: samples complete as their requests end (events)
    token_latencies: bool = False  # LoadGen measures TTFT/TPOT: FirstTokenComplete, then n_tokens


@dataclass
class Bridge:
    workers: Target
    options: BridgeOptions
    meter: ScenarioMeter
    inbox: "queue.SimpleQueue[tuple]" = field(default_factory=queue.SimpleQueue)
    results: list[ShardResult] = field(default_factory=list)  # accepted batches
    accepted: set[int] = field(default_factory=set)  # the examples the accepted batches ran
    failed: list[ShardResult] = field(default_factory=list)  # attempts that failed (re-issued or fatal)
    error: UserError | RunFailed | None = None
    crash: Exception | None = None  # a bug in the dispatcher
    aborted: bool = False
    requests: list[RequestRecord] = field(default_factory=list)  # generate: each completed sample, driver's clock

    def __post_init__(self) -> None:
        self.waiting: deque[Sample] = deque()
        self.outstanding: dict[int, Sample] = {}
        self.inflight: dict[int, tuple[int, list[Sample], float]] = {}  # batch id -> (worker, samples, sent at)
        # places whose worker is not lost (a continuous engine's worker is several places: worker_of)
        self.live = {p for p in range(self.workers.size) if self.workers.worker_of[p] not in self.workers.lost}
        # Idle workers, the most recently busy last: it gets the next batch (its process, caches and
        # device clocks are warm); the others take what arrives while it is busy.
        self.suspect: set[int] = set(self.workers.restarting) & self.live
        self.idle: deque[int] = deque(w for w in range(self.workers.size) if w in self.live - self.suspect)
        self.streak = dict.fromkeys(range(self.workers.size), 0)
        self.flushed = False  # LoadGen issued its last query: nothing waits for a fuller batch any more
        self.answered: dict[int, bytes] = {}  # accuracy mode: example -> its response
        self.repeats: dict[int, list[Sample]] = {}  # accuracy mode: example in flight -> samples waiting on it
        self._starved_since: float | None = None
        self._next_batch = 0
        self._arrived = 0  # queries issued since the live metrics last heard
        self._first_lock = threading.Lock()  # a sample's first token is told from the event's thread
        self._complete_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="raybench-loadgen-dispatch", daemon=True)

    # ------------------------------------------------------------------ LoadGen's callbacks
    def issue_query(self, samples: list) -> None:
        self.inbox.put((ISSUE, [(s.id, s.index) for s in samples], time.monotonic_ns()))

    def flush_queries(self) -> None:
        """LoadGen's last query is issued: what waits for a fuller batch goes now."""
        self.inbox.put((FLUSH,))

    # ------------------------------------------------------------------ the caller's side
    def start(self) -> None:
        for worker in self.suspect:  # still being brought back from an earlier test: join once back
            self._watch_ping(worker)
        self._thread.start()

    def stop(self) -> None:
        self.inbox.put((STOP,))
        self._thread.join()

    def abort(self) -> None:
        """Ctrl-C: complete everything at once so LoadGen can end."""
        self.inbox.put((ABORT,))

    # ------------------------------------------------------------------ the dispatcher thread
    def _loop(self) -> None:
        while True:
            timeout = self._guarded(self._dispatch)
            if self._arrived:  # the live metrics once the new samples are on their way, not before
                self.meter.query_issued(self._arrived, len(self.waiting))
                self._arrived = 0
            try:
                message = self.inbox.get(timeout=timeout)
            except queue.Empty:
                continue
            while True:
                if message[0] == STOP:
                    return
                self._guarded(self._handle, message)
                try:
                    message = self.inbox.get_nowait()
                except queue.Empty:
                    break

    def _guarded(self, step, *args):
        """A step of the dispatcher: a bug in it must not leave LoadGen waiting forever."""
        try:
            return step(*args)
        except Exception as exc:  # noqa: BLE001 - re-raised, with its traceback, once LoadGen has returned
            self.crash = self.crash or exc
            self._fail(RunFailed(f"the LoadGen dispatcher failed: {first_line(exc)}"))
            return None

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == ISSUE:
            self._arrive(message[1], message[2])
        elif kind == FLUSH:
            self.flushed = True
        elif kind == DONE:
            self._settle(*message[1:])
        elif kind == PING:
            self._answer_ping(*message[1:])
        elif kind == ABORT:
            self.aborted = True
            self._fail(RunFailed("interrupted"))

    def _arrive(self, samples: list[tuple[int, int]], issued_ns: int) -> None:
        query = Query(issued_ns, len(samples))
        for response_id, index in samples:
            sample = Sample(response_id, index, query)
            self.outstanding[response_id] = sample
            if self.options.accuracy and self._answer_repeat(sample):
                continue
            self.waiting.append(sample)
        self._arrived += 1
        if self.error is not None:
            self._complete(list(self.waiting), {})
            self.waiting.clear()

    def _answer_repeat(self, sample: Sample) -> bool:
        """Accuracy mode: an example issued again waits on (or is answered with) the first one's response."""
        if sample.index in self.answered:
            self._complete([sample], {sample.index: self.answered[sample.index]})
            return True
        if sample.index in self.repeats:
            self.repeats[sample.index].append(sample)
            return True
        self.repeats[sample.index] = []
        return False

    def _dispatch(self) -> float | None:
        """Hand waiting samples to idle workers; the seconds until something is due (a partial batch,
        a batch's deadline), if anything is."""
        while self.waiting and self.idle and self.error is None:
            if len(self.waiting) < self.options.bs and self.options.max_batch_wait_s > 0 and not self.flushed:
                waited = (time.monotonic_ns() - self.waiting[0].query.issued_ns) / 1e9
                if waited < self.options.max_batch_wait_s:
                    return self._sooner(self.options.max_batch_wait_s - waited, self._deadlines())
            worker = self._pick(self.waiting[0])
            take = [self.waiting.popleft() for _ in range(min(self.options.bs, len(self.waiting)))]
            self._submit(worker, take)
        return self._sooner(self._starvation_check(), self._deadlines())

    def _pick(self, head: Sample) -> int:
        """The most recently busy idle worker allowed to run the head sample (one that has not failed
        it, unless every live worker has: policy.may_run)."""
        for worker in reversed(self.idle):
            if may_run(worker, head.failed_on, self.live):
                self.idle.remove(worker)
                return worker
        return self.idle.pop()

    def _submit(self, worker: int, samples: list[Sample]) -> None:
        batch = SampleBatch(self._next_batch, tuple(s.index for s in samples), self.options.pass_name,
                            max(s.attempt for s in samples))
        self._next_batch += 1
        self.inflight[batch.batch_id] = (worker, samples, time.monotonic())
        on_event = self._events(samples, worker, time.monotonic_ns()) if self.options.generates else None
        future = self.workers.run(worker, batch, on_event)
        future.add_done_callback(lambda f, b=batch: self.inbox.put((DONE, b, worker, f)))
        self.meter.queue_depth(worker, len(samples), len(self.waiting))  # after the hand-over: not on its path

    def _settle(self, batch: SampleBatch, worker: int, future: Future) -> None:
        entry = self.inflight.pop(batch.batch_id, None)
        if entry is None:
            return  # abandoned at its deadline; its samples went back then
        _, samples, _ = entry
        self.meter.queue_depth(worker, 0, len(self.waiting))
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 - a dead worker, or a bug: both end in a decision below
            if not self.workers.is_death(exc):
                self._fail(RunFailed(f"worker {worker}: {first_line(exc)}"))
                return
            result = died_result(batch.as_shard(), worker, f"worker {worker} died: {first_line(exc)}")
            self._suspect(worker)
        else:
            self._judge(worker, result)
        if result.error is None:
            self.results.append(result)
            self.accepted.update(batch.indices)
            self._complete(samples, dict(zip(batch.indices, result.responses)))
            return
        self.failed.append(result)
        if decide(result, self.options.max_attempts) == "retry":
            for sample in samples:
                sample.attempt = batch.attempt + 1
                sample.failed_on.add(worker)
            self.waiting.extendleft(reversed([s for s in samples if s.response_id in self.outstanding]))
            return
        self._fail(RunFailed(f"LoadGen samples {list(batch.indices)[:8]} failed on attempt {batch.attempt}/"
                             f"{self.options.max_attempts} on worker {worker}: {result.error.message}"))

    def _judge(self, worker: int, result: ShardResult) -> None:
        """A worker that answered: idle again, or taken out after failing batch after batch."""
        self.streak[worker], verdict = judge_worker(self.streak[worker], result, died=False)
        if verdict == "keep":
            self.idle.append(worker)
            return
        self.workers.take_out(worker, f"taken out after {self.streak[worker]} failed batches in a row, the last: "
                                      f"{result.error.message}")
        for place in [p for p in self.live if self.workers.worker_of[p] == self.workers.worker_of[worker]]:
            self.live.discard(place)  # every place of the worker taken out
            if place in self.idle:
                self.idle.remove(place)
        if not self.live:
            self._fail(RunFailed(f"every worker was taken out; the last: {result.error.message}"))

    def _deadlines(self) -> float | None:
        """Abandon batches past `batch_timeout_s` (their workers hung) and return when the next is due."""
        limit = self.options.batch_timeout_s
        if limit is None or not self.inflight or self.error is not None:
            return None
        now, due = time.monotonic(), None
        for batch_id, (worker, samples, sent) in list(self.inflight.items()):
            left = sent + limit - now
            if left > 0:
                due = left if due is None else min(due, left)
                continue
            del self.inflight[batch_id]
            why = f"worker {worker} did not answer a batch within {limit:g} s (batch_timeout_s): abandoned as dead"
            attempt = max(s.attempt for s in samples)
            self.failed.append(died_result(SampleBatch(batch_id, (), self.options.pass_name, attempt).as_shard(),
                                           worker, why))
            if not self.workers.abandon(worker, why):
                self._fail(RunFailed(f"{why}; it cannot be restarted"))
                return None
            self._suspect(worker)
            for sample in samples:
                sample.failed_on.add(worker)
            self.waiting.extendleft(reversed([s for s in samples if s.response_id in self.outstanding]))
        return due
    # ------------------------------------------------------------------ generate: tokens as they exist
    def _events(self, samples: list[Sample], worker: int, sent_ns: int):
        """The batch's event handler, on the target's thread (one per lane, streaming call or
        in-process worker): a request's first token and its end go to LoadGen from there, at once.
        Both from the same thread on purpose: LoadGen logs each thread's calls in its own buffer,
        and a completion logged from another thread than its first token may be read first
        ("Attempted to record a sample latency before it's first token latency")."""
        def on_event(event: tuple) -> None:
            if event[0] == "first":
                self._first_token(samples[event[1]], event[2])
            elif event[0] == "done":
                _, row, output, gaps, input_tokens, *answer = event
                self._request_done(samples[row], worker, sent_ns, Output(output, gaps, input_tokens, *answer),
                                   time.monotonic_ns())
        return on_event

    def _first_token(self, sample: Sample, token: int | None) -> None:
        """Tell LoadGen a sample's first token (once: a re-issued sample's second first token is not
        news), with the token's id as its data (int32, as MLPerf's LLM harnesses send tokens)."""
        with self._first_lock:
            if sample.first_ns is not None:
                return
            sample.first_ns = time.monotonic_ns()
            if self.options.token_latencies:
                import mlperf_loadgen as lg

                data = array.array("i", [] if token is None else [token])
                address, length = data.buffer_info()
                lg.FirstTokenComplete([lg.QuerySampleResponse(sample.response_id, address,
                                                              length * data.itemsize)])

    def _request_done(self, sample: Sample, worker: int, sent_ns: int, out: Output, done_ns: int) -> None:
        """A request ended: complete its sample with its output and its token count, and keep its
        record on the driver's clock: arrival at LoadGen's issue, its first token and end when they
        reached the driver, the tokens between placed by the worker's own gaps (so ITL is the
        worker's). A request that made no token (an endpoint's that failed, or an empty answer) has
        no first token: LoadGen is told one as it is completed (`_complete`)."""
        if sample.response_id not in self.outstanding:
            return
        first = sample.first_ns / 1e9 if sample.first_ns is not None else None
        self.requests.append(RequestRecord(
            sample.response_id, sample.query.issued_ns / 1e9, sent_ns / 1e9,
            token_times_s=[first + gap for gap in out.gaps] if first is not None else [],
            token_counts=[1] * len(out.gaps) if first is not None else [], end_s=done_ns / 1e9,
            input_tokens=out.input_tokens, output_tokens=out.n_tokens, error=out.error, source=f"worker {worker}"))
        self._complete([sample], {}, {sample.index: out})

    def _suspect(self, worker: int) -> None:
        if worker not in self.suspect:
            self.suspect.add(worker)
            self._watch_ping(worker)

    def _watch_ping(self, worker: int) -> None:
        future = self.workers.ping(worker)
        future.add_done_callback(lambda f: self.inbox.put((PING, worker, f)))

    def _answer_ping(self, worker: int, future: Future) -> None:
        self.suspect.discard(worker)
        try:
            future.result()
        except Exception as exc:  # noqa: BLE001 - the actor is gone for good (no restarts left)
            self.live.discard(worker)
            self.workers.forget(worker, f"died and could not be restarted: {first_line(exc)}")
            if not self.live:
                self._fail(RunFailed("every worker died and none could be restarted"))
            return
        if worker in self.live and worker not in self.idle:
            self.idle.append(worker)

    def _starvation_check(self) -> float | None:
        """Fail when no worker has been usable for RESTART_WAIT_S; else how long to sleep (None: until woken)."""
        if self.error is not None or not self.live or self.live - self.suspect:
            self._starved_since = None
            return None
        now = time.monotonic()
        self._starved_since = self._starved_since or now
        if now - self._starved_since > RESTART_WAIT_S:
            self._fail(RunFailed(f"no worker came back within {RESTART_WAIT_S:.0f} s after failures"))
            return None
        return 1.0

    @staticmethod
    def _sooner(*seconds: float | None) -> float | None:
        due = [s for s in seconds if s is not None]
        return max(0.0, min(due)) if due else None

    def _fail(self, error: UserError | RunFailed) -> None:
        """The run cannot finish: say why once, and let LoadGen end by completing all it waits for."""
        if self.error is None:
            self.error = error
        self.waiting.clear()
        self._complete(list(self.outstanding.values()), {})

    def _complete(self, samples: list[Sample], responses: dict[int, bytes],
                  outputs: dict[int, Output] | None = None) -> None:
        """Complete samples in LoadGen with their response bytes (the task's encoding), or their
        requests' outputs (generate: the output ids as int32 and their count; an endpoint's: the
        text's bytes and the server's count). With token latencies, a sample whose first token was
        never told (a run that failed, a request that made none) is told first: LoadGen requires
        it, and its SingleStream crashes the process without it."""
        with self._complete_lock:  # generate: event threads complete samples beside the dispatcher
            self._complete_locked(samples, responses, outputs)

    def _complete_locked(self, samples: list[Sample], responses: dict[int, bytes],
                         outputs: dict[int, Output] | None) -> None:
        import mlperf_loadgen as lg

        if self.options.accuracy:  # the examples' repeats waiting on them are answered with them
            samples = samples + [r for s in samples if s.index in responses for r in self.repeats.pop(s.index, ())]
            self.answered.update(responses)
        replies, buffers = [], []  # the buffers stay alive until LoadGen has copied them
        done: list[Query] = []
        for sample in samples:
            if self.outstanding.pop(sample.response_id, None) is None:
                continue  # completed before (a late result after the run failed)
            made = (outputs or {}).get(sample.index)
            if self.options.token_latencies and sample.first_ns is None:
                self._first_token(sample, None)
            data = responses.get(sample.index, b"")
            if made is not None:
                buffers.append(made.data())
                address, length = buffers[-1].buffer_info()
                replies.append(lg.QuerySampleResponse(sample.response_id, address, length * buffers[-1].itemsize,
                                                      made.n_tokens))
            elif data:
                buffers.append(array.array("B", data))
                address, length = buffers[-1].buffer_info()
                replies.append(lg.QuerySampleResponse(sample.response_id, address, length))
            else:
                replies.append(lg.QuerySampleResponse(sample.response_id, 0, 0))
            sample.query.remaining -= 1
            if sample.query.remaining == 0:
                done.append(sample.query)
        if replies:
            lg.QuerySamplesComplete(replies)
        now = time.monotonic_ns()  # the live metrics after LoadGen has its completions, not before
        for query in done:
            self.meter.query_completed((now - query.issued_ns) / 1e9)
