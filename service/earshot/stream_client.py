"""`earshot stream FILE_OR_-`: stream audio to a server's /v1/stream and print its messages as they come.

A FILE is decoded (any format soundfile reads) and sent as f32le at its own rate and channels, in
chunks of --chunk-ms, at real-time pace with --realtime (else as fast as the server keeps up). `-`
reads raw pcm_s16le from standard input (--sample-rate and --channels say what it is), so a
microphone or a radio stream can be piped in: `arecord -f S16_LE -r 16000 -c 1 | earshot stream -`.
Each server message is printed as one JSON line; the exit status is 0 when the stream ended
normally, 1 when the server closed it with an error.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Iterator

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="FILE_OR_-", help="an audio file, or - for raw pcm_s16le on standard input")
    parser.add_argument("--url", default="ws://127.0.0.1:8000/v1/stream", help="the server's stream endpoint")
    parser.add_argument("--model", help="bundle name (default: the server's default)")
    parser.add_argument("--sample-rate", type=int, help="with -: the input's sample rate")
    parser.add_argument("--channels", type=int, default=1, help="with -: the input's channels")
    parser.add_argument("--chunk-ms", type=float, default=100.0, help="audio per message")
    parser.add_argument("--realtime", action="store_true", help="send no faster than real time")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--embeddings", action="store_true", help="ask for each window's embedding")
    parser.add_argument("--segments", action="store_true", help="ask for segment events")
    parser.add_argument("--api-key", help="Bearer key (default: EARSHOT_API_KEY)")


def chunks(args: argparse.Namespace) -> tuple[dict, Iterator[bytes]]:
    """The start message's audio fields, and the audio as byte chunks."""
    if args.source == "-":
        if not args.sample_rate:
            raise ValueError("- (standard input) needs --sample-rate (and --channels if not 1)")
        size = int(args.sample_rate * args.chunk_ms / 1000) * 2 * args.channels

        def read_stdin() -> Iterator[bytes]:
            while data := sys.stdin.buffer.read(size):
                yield data

        return {"sample_rate": args.sample_rate, "channels": args.channels, "encoding": "pcm_s16le"}, read_stdin()
    import soundfile

    audio, rate = soundfile.read(args.source, dtype="float32", always_2d=True)  # (frames, channels)
    step = max(1, int(rate * args.chunk_ms / 1000))
    fields = {"sample_rate": int(rate), "channels": int(audio.shape[1]), "encoding": "f32le"}
    return fields, (audio[i : i + step].astype("<f4").tobytes() for i in range(0, len(audio), step))


def run_stream(args: argparse.Namespace) -> int:
    import os

    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    try:
        fields, audio = chunks(args)
    except (ValueError, RuntimeError, OSError) as error:
        print(f"earshot stream: {error}", file=sys.stderr)
        return EXIT_USAGE
    key = args.api_key or os.environ.get("EARSHOT_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else None
    start = {**fields, "model": args.model, "top_k": args.top_k, "embeddings": args.embeddings, "segments": args.segments}
    try:
        with connect(args.url, additional_headers=headers, max_size=None) as socket:
            socket.send(json.dumps({k: v for k, v in start.items() if v is not None}))

            def send_audio() -> None:
                began, sent_s = time.monotonic(), 0.0
                try:
                    for data in audio:
                        socket.send(data)
                        sent_s += len(data) / (4 if fields["encoding"] == "f32le" else 2) / fields["channels"] / fields["sample_rate"]
                        if args.realtime:
                            time.sleep(max(0.0, began + sent_s - time.monotonic()))
                    socket.send(json.dumps({"event": "end"}))
                except ConnectionClosed:
                    pass  # the server closed it: its reason is printed by the reader

            sender = threading.Thread(target=send_audio, daemon=True)
            sender.start()
            failed = False
            for message in socket:
                print(message, flush=True)
                failed = failed or json.loads(message).get("event") == "error"
            return EXIT_FAILED if failed or (socket.close_code or 1000) >= 4000 else EXIT_OK
    except InvalidStatus as error:
        body = error.response.body.decode("utf-8", "replace") if error.response.body else ""
        print(f"earshot stream: refused ({error.response.status_code}): {body}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as error:
        print(f"earshot stream: cannot connect to {args.url}: {error}", file=sys.stderr)
        return EXIT_FAILED
