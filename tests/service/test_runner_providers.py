"""Deployment options are the runner's: built from the bundle's facts and this server's config."""

from __future__ import annotations

from earshot.engine.runner import Runner, RunnerConfig


def test_tensorrt_options_come_from_the_bundle_facts_and_the_server(tmp_path, tiny_bundle, yamnet_bundle):
    runner = Runner(tiny_bundle, RunnerConfig(("cpu",), 1, 16, tmp_path / "cache"))
    options = runner._provider_options("tensorrt")
    assert options["trt_fp16_enable"] is True and options["trt_engine_cache_enable"] is True
    assert options["trt_engine_cache_path"].startswith(str(tmp_path / "cache" / "tensorrt" / "tiny-"))
    window = tiny_bundle.manifest.input_samples
    assert options["trt_profile_min_shapes"] == f"waveform:1x{window},num_samples:1"
    assert options["trt_profile_max_shapes"] == f"waveform:16x{window},num_samples:16"
    assert runner._provider_options("cuda") == {"cudnn_conv_algo_search": "HEURISTIC"}
    assert runner._provider_options("cpu") == {}
    int8 = Runner(yamnet_bundle, RunnerConfig(("cpu",), 1, 4, tmp_path / "cache"))
    options = int8._provider_options("tensorrt")
    assert options["trt_fp16_enable"] is False  # integer MatMuls are not TensorRT's
    assert options["trt_profile_opt_shapes"] == "waveform:4x15600"  # YAMNet reads no num_samples
