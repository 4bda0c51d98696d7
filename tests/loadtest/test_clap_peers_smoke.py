"""The pure parts of loadtest/bench_clap_peers.py (no servers, no torch, no installs): the clips and
request bodies both servers get, the summary of a closed loop, the ratios, and the markdown table."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import soundfile as sf

from loadtest import bench_clap_peers as peers


def test_clips_are_ten_seconds_at_48k_and_the_bodies_carry_them_as_wav_data_uris():
    waves = peers.cut_clips(2)
    assert [len(w) for w in waves] == [480000, 480000]
    assert not np.array_equal(waves[0], waves[1])  # distinct clips
    bodies, decoded, wav_bytes = peers.request_bodies(waves)
    assert wav_bytes == 44 + 2 * 480000  # mono PCM-16 WAV
    for body, samples in zip(bodies, decoded, strict=True):
        request = json.loads(body)
        assert set(request) == {"model", "input", "modality", "encoding_format"}
        assert request["model"] == peers.MODEL_NAME and request["modality"] == "audio"
        (uri,) = request["input"]
        assert uri.startswith("data:audio/wav;base64,")
        audio, rate = sf.read(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])), dtype="float32")
        assert rate == 48000
        np.testing.assert_array_equal(audio, samples)  # the baseline sees what the servers decode


def test_cpu_flags_split_the_isa_flags_into_present_and_absent():
    flags = peers.cpu_flags("processor\t: 0\nflags\t\t: fpu avx avx2 avx512f avx512_vnni amx_tile\n")
    assert flags["present"] == ["avx", "avx2", "avx512f", "avx512_vnni", "amx_tile"]
    assert "avx512_bf16" in flags["absent"] and "amx_int8" in flags["absent"]


def test_peer_pins_are_exact_and_torch_comes_first():
    assert peers.pinned(peers.PEER_TORCH) == ("torch", "2.13.0")
    assert peers.pinned(peers.PEER_PACKAGES[0]) == ("infinity-emb", "0.0.78")
    assert all("==" in requirement for requirement in peers.PEER_PACKAGES)


def row(records) -> dict:
    summary = peers.summarize(records, wall_s=2.0)
    summary.update(server_cpu_cores=1.5, client_cpu_s=0.4, other_processes_cpu_cores=0.02, cosine_vs_transformers=1.0)
    return summary


def test_summary_ratios_and_table():
    ok = [peers.Record(i % 2, 0.1 * i, 0.1 * i + 0.25, 200) for i in range(8)]
    failed = peers.Record(0, 1.0, 1.1, 0, "ConnectError: refused")
    earshot = row(ok)
    assert earshot["clips_per_s"] == 4.0 and earshot["errors"] == 0
    assert abs(earshot["latency_ms"]["p50"] - 250) < 1e-6
    infinity = row(ok[:2] + [failed])
    assert infinity["clips_per_s"] == 1.0 and infinity["errors"] == 1 and infinity["statuses"] == {"200": 2, "0": 1}
    assert infinity["error_samples"] == ["1x ConnectError: refused"]

    report = {
        "settings": {"clips": 4, "clip_seconds": 10.0, "clients": 4, "duration_s": 2.0, "warmup_s": 1.0, "threads": 2},
        "machine": {
            "cpu_model": "AMD EPYC",
            "cpu_count": 2,
            "isa_flags": {"present": ["avx2"], "absent": []},
            "versions": {"onnxruntime": "1.32.0"},
        },
        "peer": {"versions": {"infinity-emb": "0.0.78", "torch": "2.13.0+cpu", "transformers": "4.57.6"}},
        "peer_settings": {"batch_size": 32},
        "contenders": {"infinity": infinity, "earshot_fp32": earshot, "earshot_int8": {"error": "boom\nmore"}},
        "transformers_eager": {"clips_per_s": 2.0, "batch": 4, "other_processes_cpu_cores": 0.0},
    }
    report["ratios"] = peers.ratios(report)
    report["goals"] = peers.goals(report["ratios"])
    assert report["ratios"]["earshot_fp32_vs_infinity"] == 4.0
    assert report["ratios"]["earshot_int8_vs_infinity"] is None
    assert report["goals"] == {"earshot_fp32_vs_infinity": {"goal": ">= 3.0", "met": True}}
    table = peers.markdown(report)
    assert "| earshot fp32 | 4.00 | 4.00 | 250 | 250 | 8/8 | 0 |" in table
    assert "| earshot int8 | **failed**: boom |" in table
    header, rule = table.splitlines()[2:4]
    assert header.count("|") == rule.count("|")
    assert all(
        line.count("|") == header.count("|")
        for line in table.splitlines()
        if line.startswith("| ") and "ratio" not in line and "_vs_" not in line
    )
