"""The text batcher's rules with a stand-in text tower that records its batches: texts of many
requests share a batch, a batch stays within its padded-token budget, FIFO order, deadlines,
cancellation and a full queue."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from earshot.engine.errors import DeadlineExceeded, Draining, InferenceFailed, QueueFull
from earshot.engine.text_batcher import TextBatcher, TextBatcherConfig

DIM = 4


class RecordingEncoder:
    """Embeds a token list as [first id, length, 0, 0]; records every batch; can be held or fail."""

    embedding_dim = DIM

    def __init__(self) -> None:
        self.batches: list[list[list[int]]] = []
        self.release = threading.Event()
        self.release.set()
        self.fail = False

    def run(self, token_ids: list[list[int]]) -> np.ndarray:
        self.release.wait(10)
        self.batches.append(token_ids)
        if self.fail:
            raise RuntimeError("the text graph broke")
        return np.array([[ids[0], len(ids), 0, 0] for ids in token_ids], dtype=np.float32)


def tokens(first: int, length: int) -> list[int]:
    return [first] + [0] * (length - 1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def started(encoder: RecordingEncoder, **config) -> TextBatcher:
    values = {"max_batch_tokens": 64, "max_wait_s": 0.02, "max_queued_texts": 100, **config}
    batcher = TextBatcher("t", encoder, TextBatcherConfig(**values))  # type: ignore[arg-type]
    batcher.start()
    return batcher


@pytest.mark.anyio
async def test_requests_share_batches_within_the_token_budget():
    encoder = RecordingEncoder()
    batcher = await started(encoder, max_batch_tokens=32, max_wait_s=0.05)
    requests = [[tokens(10 * r + i, 2 + i) for i in range(3)] for r in range(4)]  # lengths 2, 3, 4
    results = await asyncio.gather(*(batcher.submit(texts, 5.0) for texts in requests))
    await batcher.close()
    for texts, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result[:, 0], [ids[0] for ids in texts])  # each its own rows, in order
        np.testing.assert_array_equal(result[:, 1], [len(ids) for ids in texts])
    assert len(encoder.batches) < len(requests)  # requests were batched together
    for batch in encoder.batches:
        assert len(batch) * max(map(len, batch)) <= 32
    order = [ids[0] for batch in encoder.batches for ids in batch]
    assert order == [ids[0] for texts in requests for ids in texts]  # FIFO


@pytest.mark.anyio
async def test_a_text_longer_than_the_budget_runs_alone():
    encoder = RecordingEncoder()
    batcher = await started(encoder, max_batch_tokens=8)
    result = await batcher.submit([tokens(1, 20), tokens(2, 3)], 5.0)
    await batcher.close()
    assert result[:, 1].tolist() == [20, 3] and [len(b) for b in encoder.batches] == [1, 1]


@pytest.mark.anyio
async def test_deadline_queue_full_failure_and_shutdown():
    encoder = RecordingEncoder()
    batcher = await started(encoder, max_queued_texts=5, max_wait_s=0.0)
    encoder.release.clear()  # the first batch holds the runner
    first = asyncio.ensure_future(batcher.submit([tokens(1, 2)], 5.0))
    await asyncio.sleep(0.05)
    waiting = asyncio.ensure_future(batcher.submit([tokens(2, 2)] * 4, 5.0))
    await asyncio.sleep(0.01)
    with pytest.raises(QueueFull):
        await batcher.submit([tokens(3, 2)] * 2, 5.0)  # 4 queued + 2 > 5
    with pytest.raises(DeadlineExceeded):
        await batcher.submit([tokens(4, 2)], 0.01)  # admitted, but its deadline passes in the queue
    encoder.release.set()
    assert (await first)[0, 0] == 1 and (await waiting)[:, 0].tolist() == [2] * 4
    encoder.fail = True
    with pytest.raises(InferenceFailed, match="the text graph broke"):
        await batcher.submit([tokens(5, 2)], 5.0)
    await batcher.close()
    with pytest.raises(Draining):
        await batcher.submit([tokens(6, 2)], 5.0)
