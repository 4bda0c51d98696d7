"""One clip, one embedding: the served default model against its exact reference pipeline.

The reference is the same engine with `arithmetic="reference"`: the bundle's Q/DQ as the float
arithmetic it defines, on any CPU (no integer kernel involved). The served path uses this CPU's
fastest exact integer kernels. The promise (README, "Same answer on every machine"): clip
embeddings at median cosine >= 0.99 to the reference, and retrieval as good as the reference's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from earshot.engine import Engine
from earshot.engine.self_test import cosine_rows
from tests.service.conftest import make_config

# what a retrieval over the shared recordings should find: clips of one kind are each other's neighbours
GROUPS = {
    "drum loop": ["music_drum_loop.flac"] + [f"variant_{v}" for v in (
        "aiff.aiff", "float32.wav", "mono_44k.mp3", "mono_48k.opus.ogg", "mono_8k_pcm16.wav", "stereo_48k_pcm24.wav")],
    "speech": ["speech_french.ogg", "speech_spanish_16s.ogg", "speech_greek_20s.ogg"],
    "animal": ["bird_crow.ogg", "bird_rooster.ogg", "mammal_sheep.ogg"],
    "one-shot percussion": ["drum_kick.flac", "drum_snare.flac", "drum_hihat.flac", "tabla.flac"],
    "music": ["music_piano.flac", "music_guitar.flac", "choir.flac", "long_75s_stereo_22k.flac"],
}


def embed_all(tmp_path: Path, bundle, names: list[str], audio_dir: Path, arithmetic: str) -> np.ndarray:
    async def run() -> np.ndarray:
        settings = make_config(
            tmp_path, arithmetic=arithmetic, max_batch_windows=32, threads=2, request_timeout_s=3600
        )  # no deadline: a slow (or emulated) CPU still answers
        async with Engine([bundle], settings) as engine:
            results = [await engine.embed_audio((audio_dir / name).read_bytes(), top_k=0) for name in names]
        return np.stack([result.embedding for result in results])  # (clips, 1024)

    return asyncio.run(run())


def grouped_nearest_neighbour_accuracy(vectors: np.ndarray, groups: list[str]) -> float:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = similarity.argmax(axis=1)
    return float(np.mean([groups[i] == groups[j] for i, j in enumerate(nearest)]))


@pytest.fixture(scope="module")
def embedded(yamnet_bundle, audio_dir, tmp_path_factory):
    names = [name for members in GROUPS.values() for name in members]
    groups = [group for group, members in GROUPS.items() for _ in members]
    tmp = tmp_path_factory.mktemp("same-answer")
    served = embed_all(tmp, yamnet_bundle, names, audio_dir, "fast")
    reference = embed_all(tmp, yamnet_bundle, names, audio_dir, "reference")
    return names, groups, served, reference


def test_served_clip_embeddings_match_the_exact_reference(embedded):
    names, _, served, reference = embedded
    cosine = cosine_rows(served, reference)
    worst = names[int(cosine.argmin())]
    print(f"clip cosine to the reference: median {np.median(cosine):.4f}, min {cosine.min():.4f} ({worst})")
    assert np.median(cosine) >= 0.99
    assert cosine.min() >= 0.95  # measured on these 24 clips: min 0.977 (tabla), median 0.9986


def test_retrieval_is_as_good_as_the_reference(embedded):
    _, groups, served, reference = embedded
    served_accuracy = grouped_nearest_neighbour_accuracy(served, groups)
    reference_accuracy = grouped_nearest_neighbour_accuracy(reference, groups)
    print(f"grouped 1-NN accuracy: served {served_accuracy:.3f}, reference {reference_accuracy:.3f}")
    assert abs(served_accuracy - reference_accuracy) <= 0.01
    assert reference_accuracy >= 0.75  # the model is a real tagger: most clips find their kind
