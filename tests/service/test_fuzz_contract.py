"""Fuzzing the HTTP contract (README, "Using the API") against the real server: `earshot serve` on
127.0.0.1 with a tiny bundle, schemathesis driven by the server's own /openapi.json.

Every operation gets schemathesis' coverage cases (boundary and missing values, wrong types,
unexpected methods) and hypothesis-drawn positive and negative cases. /v1/embed and /v1/embeddings
also get audio: each file of shared/audio/bad, real clips, clips over the limits, random bytes and
real clips cut short and overwritten, sent raw, as multipart and as data URIs; and a list of
requests no schema describes (broken multipart, chunked bodies over the limit, deep JSON, ...).
The bar:

- no 5xx response at all; the server still answers /healthz at the end and logged no exception
  that escaped the error handlers;
- every error is JSON `{"error": {"code": str, "message": str}}` with a status of the contract;
- responses conform to the schema by schemathesis' checks (documented status, content type,
  headers, body; negative data rejected; unexpected methods 405), all of them but one:
  `positive_data_acceptance` expects every schema-valid request to be accepted, and the schema
  cannot say "decodable audio", "a base64 data URI" or "a model this server has", so the 400s
  and 404s it would flag are the contract working.

The run is deterministic (hypothesis derandomized, no example database, no shrinking) and bounded
(a fixed number of examples per operation); it prints the cases it tried and fails below a floor.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from loadtest.launch import Server
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import positive_data_acceptance

from loadtest import launch
from tests.service.small_bundles import EMBEDDING_DIM, write_tiny_bundle

pytestmark = pytest.mark.slow  # end-to-end: real processes, seconds per test

REPO_ROOT = Path(__file__).resolve().parents[2]
AUDIO_DIR = REPO_ROOT / ".." / "shared" / "audio"
START_TIMEOUT_S = 60

MAX_BODY_BYTES = 1024 * 1024  # the server's limits in this test
MAX_AUDIO_SECONDS = 10.0
GOOD_CLIPS = [
    "drum_kick.flac", "speech_french.ogg", "short_50ms.wav", "variant_mono_44k.mp3",
    "variant_mono_48k.opus.ogg", "variant_mono_8k_pcm16.wav",
]  # fmt: skip
TOO_LONG_CLIP = "speech_spanish_16s.ogg"  # 15.7 s, 232 kB: 413 audio_too_long
TOO_BIG_CLIP = "long_75s_stereo_22k.flac"  # 2 MB: 413 body_too_large
MUTATED_CLIPS = [
    "drum_kick.flac", "speech_french.ogg", "short_50ms.wav", "silence_1s.wav", "variant_mono_44k.mp3",
    "variant_mono_48k.opus.ogg", "variant_aiff.aiff",
]  # fmt: skip  # one of each container the decoder reads

# Statuses an error may have (README, "Using the API"); the 5xx ones fail this test all the same.
CONTRACT_ERROR_STATUSES = frozenset({400, 401, 404, 405, 413, 415, 422, 429, 499, 500, 503, 504})
INFERENCE_OPERATIONS = ("POST /v1/embed", "POST /v1/embeddings")  # answers carry the timing headers
TIMING_HEADERS = ("x-queue-time-ms", "x-inference-time-ms")
# What the server logs when an exception escapes (uvicorn) or reaches the catch-all handler (earshot).
UNHANDLED_MARKERS = ("Exception in ASGI application", "unexpected error")

FUZZ_EXAMPLES = 40  # per operation and generation mode; schemathesis' coverage cases come on top
AUDIO_EXAMPLES = 120  # per audio endpoint
MIN_CASES = 500  # the run tries about 640: the floor catches a run that silently tests nothing

# Raw audio bodies go out as they are, under audio media types (the schema says `audio/*`).
AUDIO_MEDIA_TYPES = ["audio/wav", "audio/flac", "audio/ogg", "audio/mpeg", "audio/aiff"]
schemathesis.serializer.alias(AUDIO_MEDIA_TYPES, "application/octet-stream")

FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: failures are collected, not minimised
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    print_blob=False,
)


# -- the server --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`earshot serve` with the tiny bundle on a free loopback port, once it is ready."""
    root = tmp_path_factory.mktemp("fuzz")
    bundle = write_tiny_bundle(root / "tiny")
    flags = {"cache_dir": root / "cache", "threads": 1, "max_body_bytes": MAX_BODY_BYTES,
             "max_audio_seconds": MAX_AUDIO_SECONDS}
    running = launch.start([bundle.path], root / "server.log", flags=flags, clean_env=True,
                           ready_timeout_s=START_TIMEOUT_S)
    try:
        yield running
    finally:
        running.kill()


# -- the checks --------------------------------------------------------------------------------
def _header(response: schemathesis.Response, name: str) -> str | None:
    values = [value for key, values in response.headers.items() if key.lower() == name for value in values]
    return values[0] if values else None


def contract_problems(label: str, response: schemathesis.Response) -> list[str]:
    """What is wrong with this answer by the contract (empty: nothing)."""
    status = response.status_code
    problems = [f"a server error ({status})"] if status >= 500 else []
    if status < 400:
        if status == 200 and label in INFERENCE_OPERATIONS:
            problems += [f"no {name} header" for name in TIMING_HEADERS if _header(response, name) is None]
        return problems
    if status not in CONTRACT_ERROR_STATUSES:
        problems.append(f"status {status} is not one of the contract's")
    content_type = _header(response, "content-type") or ""
    if content_type.split(";")[0].strip() != "application/json":
        problems.append(f"an error with content type {content_type!r}, not application/json")
    if status == 429 and _header(response, "retry-after") is None:
        problems.append("a 429 without Retry-After")
    try:
        body = response.json()
    except ValueError:
        return problems + [f"an error body that is not JSON: {response.content[:200]!r}"]
    error = body.get("error") if isinstance(body, dict) else None
    if not (
        isinstance(body, dict)
        and set(body) == {"error"}
        and isinstance(error, dict)
        and set(error) == {"code", "message"}
        and isinstance(error["code"], str)
        and error["code"]
        and isinstance(error["message"], str)
    ):
        problems.append(f'an error body not of the form {{"error": {{"code", "message"}}}}: {body!r:.300}')
    return problems


@dataclass
class Tally:
    """Every case tried, by operation and status, and what went wrong (the first few in full)."""

    server: Server
    session: requests.Session = field(default_factory=requests.Session)
    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    failure_count: int = 0

    def fail(self, label: str, text: str) -> None:
        self.failure_count += 1
        if len(self.failures) < 20:
            self.failures.append(f"{label}: {text[:3000]}")

    def send(self, label: str, case: schemathesis.Case) -> schemathesis.Response | None:
        """Send one case, then the contract's checks and schemathesis'; a dead server ends the run."""
        self.cases[label] += 1
        try:
            response = case.call(base_url=self.server.url, session=self.session, timeout=30)
        except requests.RequestException as error:
            self._no_answer(label, error, case.as_curl_command())
            return None
        self._record(label, response, case.as_curl_command)
        try:
            case.validate_response(
                response,
                excluded_checks=[positive_data_acceptance],
                transport_kwargs={"base_url": self.server.url, "session": self.session},
            )
        except FailureGroup as failures:
            self.fail(label, str(failures))
        return response

    def send_raw(self, label: str, method: str, path: str, **options: Any) -> schemathesis.Response | None:
        """Send a request no schema describes, with the contract's checks."""
        self.cases[label] += 1
        try:
            sent = self.session.request(method, self.server.url + path, timeout=30, allow_redirects=False, **options)
        except requests.RequestException as error:
            self._no_answer(label, error, f"{method} {path}")
            return None
        response = schemathesis.Response.from_any(sent)
        self._record(label, response, lambda: f"{method} {path} {sorted(options)}", has_body=method != "HEAD")
        return response

    def expect(self, label: str, response: schemathesis.Response | None, statuses: set[int], what: str) -> None:
        if response is not None and response.status_code not in statuses:
            self.fail(label, f"{what}: status {response.status_code}, not {sorted(statuses)}: {response.text[:300]}")

    def _record(
        self, label: str, response: schemathesis.Response, describe: Callable[[], str], has_body: bool = True
    ) -> None:
        self.statuses[(label, response.status_code)] += 1
        problems = contract_problems(label, response) if has_body else []
        if problems:
            self.fail(label, f"{'; '.join(problems)}\n    {describe()}")

    def _no_answer(self, label: str, error: Exception, request: str) -> None:
        if not self.server.alive():
            raise AssertionError(f"the server died on {label}: {request}\n{self.server.output()[-4000:]}") from error
        self.fail(label, f"no answer ({error!r}): {request}")

    def total(self) -> int:
        return sum(self.cases.values())

    def summary(self, seconds: float) -> str:
        lines = [f"fuzzed the HTTP contract: {self.total()} cases in {seconds:.1f} s"]
        for label, count in sorted(self.cases.items()):
            statuses = ", ".join(f"{s}: {n}" for (name, s), n in sorted(self.statuses.items()) if name == label)
            lines.append(f"  {label}: {count} cases ({statuses})")
        return "\n".join(lines)


# -- the audio ---------------------------------------------------------------------------------
def _clip(name: str) -> bytes:
    return (AUDIO_DIR / name).read_bytes()


@st.composite
def mutated_clips(draw: st.DrawFn) -> bytes:
    """A real clip cut short at a random point, with a few bytes overwritten (often in the header)."""
    data = bytearray(_clip(draw(st.sampled_from(MUTATED_CLIPS))))
    data = data[: draw(st.integers(0, len(data)))]
    if data:
        for _ in range(draw(st.integers(0, 8))):
            position = draw(st.integers(0, min(len(data) - 1, 255)) | st.integers(0, len(data) - 1))
            data[position] = draw(st.integers(0, 255))
    return bytes(data)


AUDIO_BYTES = st.one_of(st.binary(max_size=2048), mutated_clips())
EMBED_MEDIA_TYPES = [*AUDIO_MEDIA_TYPES, "application/octet-stream", "multipart/form-data", "text/plain"]
DATA_URI_HEADERS = [
    "data:audio/wav;base64,", "data:application/octet-stream;base64,", "data:;base64,", "",
    "data:audio/ogg;charset=x;base64,", "data:text/plain;base64,", "data:audio/wav,", "data:",
]  # fmt: skip
SERVED_MODELS = [None, "tiny", "default"]


def _data_uri(data: bytes, header: str = "data:audio/wav;base64,") -> str:
    return header + base64.b64encode(data).decode("ascii")


def _embed_case(operation: Any, data: bytes, media_type: str, **query: Any) -> schemathesis.Case:
    body: Any = {"file": data} if media_type == "multipart/form-data" else data
    query = {name: value for name, value in query.items() if value is not None}
    return operation.Case(query=query, body=body, media_type=media_type)


def _embeddings_case(operation: Any, inputs: list[str] | str, model: str, encoding: str = "float") -> schemathesis.Case:
    body = {"model": model, "input": inputs, "encoding_format": encoding}
    return operation.Case(body=body, media_type="application/json")


# -- the test ----------------------------------------------------------------------------------
def test_fuzz_every_operation_against_the_contract(server: Server) -> None:
    began = time.monotonic()
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = {op.label: op for op in (result.ok() for result in schema.get_all_operations())}
    assert set(schema.raw_schema["paths"]) >= {"/v1/embed", "/v1/embeddings", "/v1/models", "/healthz", "/readyz"}
    tally = Tally(server)

    # 1. from the schema, every operation: coverage cases, then positive and negative fuzzing
    for label, operation in operations.items():
        coverage = schema.config.generation_for(operation=operation, phase="coverage")
        for case in schema.iter_coverage_cases(
            operation, generation_modes=list(GenerationMode), generation_config=coverage
        ):
            tally.send(label, case)
        has_inputs = bool(operation.body) or any(True for _ in operation.iter_parameters())
        modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if has_inputs else [GenerationMode.POSITIVE]
        for mode in modes:  # (nothing to make negative in an operation without inputs)
            strategy = operation.as_strategy(generation_mode=mode)
            run_hypothesis(strategy, lambda case, label=label: tally.send(label, case))

    # 2. audio files: each bad one, good clips, clips over the limits; raw, multipart, data URI
    embed, embeddings = operations["POST /v1/embed"], operations["POST /v1/embeddings"]
    files = [(path.name, path.read_bytes(), {400}) for path in sorted((AUDIO_DIR / "bad").iterdir())]
    files += [(name, _clip(name), {200}) for name in GOOD_CLIPS]
    files += [(TOO_LONG_CLIP, _clip(TOO_LONG_CLIP), {413}), (TOO_BIG_CLIP, _clip(TOO_BIG_CLIP), {413})]
    for name, data, wanted in files:
        for media_type in ("application/octet-stream", "audio/wav", "multipart/form-data"):
            case = _embed_case(embed, data, media_type, model="tiny", top_k=3, windows=True)
            response = tally.send(embed.label, case)
            tally.expect(embed.label, response, wanted, f"{name} sent as {media_type}")
            if response is not None and response.status_code == 200:
                answer = response.json()
                assert len(answer["embedding"]) == EMBEDDING_DIM and len(answer["tags"]) == 3, answer
        if len(data) * 4 // 3 < MAX_BODY_BYTES:  # (as a data URI the 2 MB clip is simply over the limit)
            response = tally.send(embeddings.label, _embeddings_case(embeddings, [_data_uri(data)], "tiny"))
            tally.expect(embeddings.label, response, wanted, f"{name} as a data URI")

    # 3. audio drawn by hypothesis: random bytes and mutated clips, any media type, model and query
    @given(
        data=AUDIO_BYTES,
        media_type=st.sampled_from(EMBED_MEDIA_TYPES),
        model=st.sampled_from(SERVED_MODELS) | st.text(max_size=8),
        top_k=st.none() | st.integers(-2, 1002),
        windows=st.booleans(),
    )
    def fuzz_embed(data: bytes, media_type: str, model: str | None, top_k: int | None, windows: bool) -> None:
        case = _embed_case(embed, data, media_type, model=model, top_k=top_k, windows=windows)
        response = tally.send(embed.label, case)
        if model in SERVED_MODELS and (top_k is None or 0 <= top_k <= 1000):  # a valid query
            wanted = {200, 400, 413} | ({415} if media_type == "text/plain" else set())
            tally.expect(embed.label, response, wanted, f"{len(data)} bytes as {media_type}")

    @given(
        clips=st.lists(st.tuples(AUDIO_BYTES, st.sampled_from(DATA_URI_HEADERS)), max_size=3),
        model=st.sampled_from(SERVED_MODELS[1:]) | st.text(max_size=8),
        encoding=st.sampled_from(["float", "base64"]),
        single=st.booleans(),
    )
    def fuzz_embeddings(clips: list[tuple[bytes, str]], model: str, encoding: str, single: bool) -> None:
        inputs = [_data_uri(data, header) for data, header in clips]
        body = inputs[0] if single and inputs else inputs
        tally.send(embeddings.label, _embeddings_case(embeddings, body, model, encoding))

    for fuzz in (fuzz_embed, fuzz_embeddings):
        settings(FUZZ_SETTINGS, max_examples=AUDIO_EXAMPLES)(fuzz)()

    # 4. requests no schema describes: broken framing, headers and encodings
    for label, method, path, options, wanted in unschematic_requests():
        response = tally.send_raw(label, method, path, **options)
        tally.expect(label, response, wanted, f"{method} {path} {sorted(options)}")

    tally.session.close()
    print("\n" + tally.summary(time.monotonic() - began))
    assert server.alive(), f"the server does not answer /healthz after the run:\n{server.output()[-4000:]}"
    if tally.failure_count:
        failures = "\n\n".join(tally.failures)
        pytest.fail(f"{tally.failure_count} failures; the first ones:\n\n{failures}", pytrace=False)
    log = server.output()
    for marker in UNHANDLED_MARKERS:  # an exception that escaped the handlers, even after its answer
        assert marker not in log, f"{marker!r} in the server log:\n{log[log.index(marker) - 200:][:4000]}"
    assert tally.total() >= MIN_CASES, f"only {tally.total()} cases tried"
    assert set(operations) <= set(tally.cases), "every operation is fuzzed"


def run_hypothesis(strategy: st.SearchStrategy[schemathesis.Case], send: Callable[[schemathesis.Case], object]) -> None:
    @FUZZ_SETTINGS
    @given(case=strategy)
    def fuzz(case: schemathesis.Case) -> None:
        send(case)

    fuzz()


def _multipart(*parts: tuple[str, str | None, bytes], boundary: str = "fuzz") -> bytes:
    chunks = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(chunks) + f"--{boundary}--\r\n".encode()


def _chunked(head: bytes, size: int) -> Iterator[bytes]:
    """A body sent chunked (no Content-Length), so only the server's running count can stop it."""
    yield head
    for _ in range(size // 65536 + 1):
        yield bytes(65536)


def unschematic_requests() -> list[tuple[str, str, str, dict[str, Any], set[int]]]:
    """(operation, method, path, arguments of requests, statuses wanted) for inputs outside the schema."""
    clip = _clip("drum_kick.flac")
    form = {"content-type": "multipart/form-data; boundary=fuzz"}
    json = {"content-type": "application/json"}
    flac_uri = _data_uri(clip, "data:audio/flac;base64,")
    embed, embeddings = "POST /v1/embed", "POST /v1/embeddings"
    return [
        # /v1/embed: media types, multipart framing, body limits, query strings
        (embed, "POST", "/v1/embed", {"data": clip}, {200}),  # no Content-Type: octet-stream
        (embed, "POST", "/v1/embed", {"data": clip, "headers": {"content-type": "AUDIO/FLAC"}}, {200}),
        (embed, "POST", "/v1/embed", {"data": clip, "headers": {"content-type": "audio/flac; rate=44100"}}, {200}),
        (embed, "POST", "/v1/embed", {"data": clip, "headers": {"content-type": ""}}, {415}),
        (embed, "POST", "/v1/embed", {"data": clip, "headers": {"content-type": ";;;"}}, {415}),
        (embed, "POST", "/v1/embed", {"data": clip, "headers": {"content-type": "multipart/form-data"}}, {400}),
        (embed, "POST", "/v1/embed", {"data": b"--fuzz\r\nbroken", "headers": form}, {400, 422}),
        (embed, "POST", "/v1/embed", {"data": _multipart(("file", None, clip)), "headers": form}, {422}),
        (embed, "POST", "/v1/embed", {"data": _multipart(("file", "a.flac", clip)), "headers": form}, {200}),
        (embed, "POST", "/v1/embed", {"data": _multipart(*[("file", f"{i}.flac", clip) for i in range(2)]),
                                      "headers": form}, {400}),
        (embed, "POST", "/v1/embed", {"data": _multipart(*[(f"f{i}", None, b"x") for i in range(20)]),
                                      "headers": form}, {400}),
        (embed, "POST", "/v1/embed", {"data": _chunked(b"RIFF", MAX_BODY_BYTES)}, {413}),
        (embed, "POST", "/v1/embed", {"data": _chunked(_multipart(("file", "a.wav", b""))[:-12], MAX_BODY_BYTES),
                                      "headers": form}, {413}),
        (embed, "POST", "/v1/embed?top_k=1&top_k=2&model=tiny&model=default", {"data": clip}, {200, 422}),
        (embed, "POST", "/v1/embed?top_k=%ZZ&model=%ff", {"data": clip}, {422}),
        (embed, "POST", "/v1/embed?model=%00", {"data": clip}, {404}),
        (embed, "POST", "/v1/embed?unknown=1", {"data": clip}, {422}),
        (embed, "POST", "/v1/embed?windows=maybe", {"data": clip}, {422}),
        (embed, "HEAD", "/v1/embed", {}, {405}),
        # /v1/embeddings: JSON that is not, too deep, not UTF-8, out of range; data URIs at scale
        (embeddings, "POST", "/v1/embeddings", {"data": "[" * 100_000, "headers": json}, {400, 422}),
        (embeddings, "POST", "/v1/embeddings", {"data": '{"a":' * 50_000, "headers": json}, {400, 422}),
        (embeddings, "POST", "/v1/embeddings", {"data": b'{"model": "\xff", "input": "x"}', "headers": json},
         {400, 422}),
        (embeddings, "POST", "/v1/embeddings", {"data": '{"model": "tiny", "input": "x", "dimensions": 1'
                                                + "0" * 5000 + "}", "headers": json}, {400, 422}),
        (embeddings, "POST", "/v1/embeddings", {"data": b'{"model": "\\ud800", "input": "x"}', "headers": json},
         {404}),
        (embeddings, "POST", "/v1/embeddings", {"data": b"model=tiny&input=x",
                                                "headers": {"content-type": "application/x-www-form-urlencoded"}},
         {422}),
        (embeddings, "POST", "/v1/embeddings", {"data": b'{"model": "tiny", "input": "x"}'}, {422}),  # no type
        (embeddings, "POST", "/v1/embeddings", {"json": {"model": "tiny", "input": flac_uri, "dimensions": 8}}, {200}),
        (embeddings, "POST", "/v1/embeddings", {"json": {"model": "tiny", "input": [flac_uri] * 16}}, {200}),
        (embeddings, "POST", "/v1/embeddings", {"data": _chunked(b'{"model": "tiny", "input": "', MAX_BODY_BYTES),
                                                "headers": json}, {413}),
        # no such route
        ("other", "GET", "/no/such/path", {}, {404}),
        ("other", "POST", "/v1/embed/", {"data": clip}, {307, 404}),
    ]  # fmt: skip
