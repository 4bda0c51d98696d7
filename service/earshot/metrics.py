"""Every Prometheus metric earshot exports, declared here and nowhere else (prefix `earshot_`).

They live in prometheus-client's default registry, so one process exports one set; labels tell
models and endpoints apart.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

# -- HTTP ------------------------------------------------------------------------------------------
REQUESTS = Counter(
    "earshot_requests_total", "HTTP requests answered, by endpoint, model and status", ["endpoint", "model", "status"]
)
REQUEST_LATENCY = Histogram(
    "earshot_request_duration_seconds", "HTTP request latency, arrival to response", ["endpoint"],
    buckets=_LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge("earshot_in_flight_requests", "HTTP requests being handled now")
ERRORS = Counter("earshot_errors_total", "error responses, by error code", ["code"])
DECODE_TIME = Histogram("earshot_decode_seconds", "time to decode and resample one audio input", buckets=_LATENCY_BUCKETS)
AUDIO_SECONDS = Counter("earshot_audio_seconds_total", "seconds of audio embedded", ["model"])

# -- engine ----------------------------------------------------------------------------------------
BATCH_SIZE = Histogram("earshot_batch_size", "windows per batch run", ["model"], buckets=_BATCH_BUCKETS)
INFERENCE_TIME = Histogram(
    "earshot_inference_seconds", "time to run one batch through the model", ["model"], buckets=_LATENCY_BUCKETS
)
QUEUE_WAIT = Histogram(
    "earshot_queue_wait_seconds", "per request: admission until its first window runs", ["model"],
    buckets=_LATENCY_BUCKETS,
)
QUEUED_WINDOWS = Gauge("earshot_queued_windows", "windows waiting for a batch", ["model"])
WINDOWS = Counter("earshot_windows_total", "windows run through the model", ["model"])
DROPPED_WINDOWS = Counter(
    "earshot_dropped_windows_total", "queued windows dropped before running, by reason", ["model", "reason"]
)
REJECTED = Counter("earshot_rejected_requests_total", "requests refused at admission, by reason", ["model", "reason"])
# -- text tower (CLAP) -------------------------------------------------------------------------------
TEXT_BATCH_TOKENS = Histogram(
    "earshot_text_batch_tokens", "padded tokens (rows x longest) per text batch run", ["model"],
    buckets=(8, 32, 128, 512, 1024, 2048, 4096, 8192, 16384),
)
TEXT_INFERENCE_TIME = Histogram(
    "earshot_text_inference_seconds", "time to run one text batch", ["model"], buckets=_LATENCY_BUCKETS
)
TEXTS = Counter("earshot_texts_total", "texts run through the text tower", ["model"])
QUEUED_TEXTS = Gauge("earshot_queued_texts", "texts waiting for a text batch", ["model"])
LABEL_CACHE = Counter("earshot_label_cache_total", "zero-shot label prompts looked up, by result", ["model", "result"])
SEARCHES = Counter("earshot_searches_total", "vector index searches, by index", ["index"])
INDEX_VECTORS = Gauge("earshot_index_vectors", "vectors in a served index", ["index"])
# -- streams (GET /v1/stream) --------------------------------------------------------------------------
STREAMS_OPEN = Gauge("earshot_streams_open", "WebSocket streams open now")
STREAMS = Counter("earshot_streams_total", "WebSocket streams ended, by close code", ["code"])
STREAM_AUDIO_SECONDS = Counter("earshot_stream_audio_seconds_total", "seconds of audio received on streams", ["model"])
STREAM_WINDOW_LATENCY = Histogram(
    "earshot_stream_window_latency_seconds", "a stream window: arrival of its last sample until its result is sent",
    ["model"], buckets=_LATENCY_BUCKETS,
)
READY = Gauge("earshot_ready", "1 when every bundle is loaded and warmed up and the server is not draining")


def exposition() -> tuple[bytes, str]:
    """The text format /metrics serves, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
