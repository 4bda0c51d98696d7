"""LAION's own CLAP .pt files (checkpoints/laion_clap.py) against LAION's reference (laion_clap 1.1.7):
golden embeddings of a tiny random model (data/laion_clap/, made by make_golden.py), the refusals,
and `earshot export laion_clap:FILE.pt`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from earshot_models.checkpoints.clap import load_model, read_clap_checkpoint
from earshot_models.checkpoints.io import CheckpointError, sha256_file
from earshot_models.checkpoints.laion_clap import (
    FORMAT,
    convert,
    load_laion_state,
    read_laion_clap,
    text_config,
    write_transformers_directory,
)

DATA = Path(__file__).parent / "data" / "laion_clap"
CHECKPOINT = DATA / "laion-clap-tiny.pt"
TEXT_HEADS = 2  # the tiny text branch is 32 wide: roberta-base's hidden / 64 rule gives no heads
ATOL = 1e-4
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(DATA / "laion-clap-tiny-golden.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def info() -> dict:
    return json.loads((DATA / "laion-clap-tiny-golden.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    return write_transformers_directory(CHECKPOINT, tmp_path_factory.mktemp("laion") / "clap", text_heads=TEXT_HEADS)


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return load_laion_state(CHECKPOINT)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def assert_close(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= ATOL, np.abs(got - expected).max()
    assert cosines(got, expected).min() >= MIN_COSINE


def test_the_geometry_is_read_from_shapes(converted, info):
    config = json.loads((converted / "config.json").read_text(encoding="utf-8"))
    audio, text, htsat, roberta = config["audio_config"], config["text_config"], info["htsat"], info["roberta"]
    assert config["model_type"] == "clap" and config["projection_dim"] == info["joint_embed_shape"]
    assert audio["patch_embeds_hidden_size"] == htsat["embed_dim"] and audio["depths"] == htsat["depths"]
    assert audio["num_attention_heads"] == htsat["num_heads"] and audio["window_size"] == htsat["window_size"]
    assert (audio["spec_size"], audio["patch_size"], audio["enable_fusion"]) == (256, 4, False)
    for field in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "max_position_embeddings",
                  "type_vocab_size", "layer_norm_eps", "pad_token_id"):
        assert text[field] == roberta[field], field
    assert text["num_attention_heads"] == TEXT_HEADS
    preprocessor = json.loads((converted / "preprocessor_config.json").read_text(encoding="utf-8"))
    assert (preprocessor["truncation"], preprocessor["padding"], preprocessor["sampling_rate"]) == (
        "rand_trunc", "repeatpad", 48000)
    assert (preprocessor["frequency_min"], preprocessor["frequency_max"], preprocessor["hop_length"]) == (50, 14000, 480)
    assert not (converted / "tokenizer.json").exists()  # a laion .pt holds none


def test_audio_embeddings_match_laion(converted, golden):
    """Our waveform model (the bundle's graph, in PyTorch) on LAION's windows, and on the clips unpadded:
    num_samples makes the graph repeat-pad them as get_audio_features does."""
    model = read_clap_checkpoint(converted).build()
    wave, counts = torch.from_numpy(golden["wave"]), torch.from_numpy(golden["num_samples"])
    unpadded = wave.clone()
    for row, count in enumerate(counts):
        unpadded[row, count:] = 0
    with torch.no_grad():
        padded_embedding, _ = model(wave, torch.full_like(counts, wave.shape[1]))
        embedding, _ = model(unpadded, counts)
    assert_close(padded_embedding.numpy(), golden["audio_embedding"])
    assert_close(embedding.numpy(), golden["audio_embedding"])


def test_transformers_clap_model_matches_laion(converted, golden):
    """transformers' ClapModel from the directory: text on the golden ids, audio through ClapFeatureExtractor."""
    from transformers import ClapFeatureExtractor

    model = load_model(converted)  # every key present and used
    features = ClapFeatureExtractor.from_pretrained(str(converted))(
        list(golden["wave"]), sampling_rate=48000, return_tensors="pt")
    with torch.no_grad():
        text = model.get_text_features(input_ids=torch.from_numpy(golden["input_ids"]),
                                       attention_mask=torch.from_numpy(golden["attention_mask"])).pooler_output
        audio = model.get_audio_features(input_features=features["input_features"].float()).pooler_output
    assert_close(text.numpy(), golden["text_embedding"])
    assert_close(audio.numpy(), golden["audio_embedding"])
    assert model.logit_scale_a.item() == pytest.approx(float(golden["logit_scale_a"]), abs=1e-7)


def test_published_and_bare_layouts_read_alike(state, tmp_path):
    raw = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    assert set(raw) == {"state_dict", "epoch"} and all(key.startswith("module.") for key in raw["state_dict"])
    bare = tmp_path / "bare.pt"
    torch.save(state, bare)  # no wrapper, no DDP prefix
    config, converted = read_laion_clap(bare, text_heads=TEXT_HEADS)
    reference_config, reference = read_laion_clap(CHECKPOINT, text_heads=TEXT_HEADS)
    assert config == reference_config and converted.keys() == reference.keys()
    assert all(torch.equal(converted[key], reference[key]) for key in reference)


def test_text_heads_follow_roberta_base_unless_given(state):
    with pytest.raises(CheckpointError, match=r"32-wide text branch: its attention heads are not in the file"):
        read_laion_clap(CHECKPOINT)
    with torch.device("meta"):  # shapes only: roberta-base's
        base = {
            "text_branch.embeddings.word_embeddings.weight": torch.empty(50265, 768),
            "text_branch.embeddings.position_embeddings.weight": torch.empty(514, 768),
            "text_branch.embeddings.token_type_embeddings.weight": torch.empty(1, 768),
            **{f"text_branch.encoder.layer.{i}.intermediate.dense.weight": torch.empty(3072, 768) for i in range(12)},
        }
    config = text_config(base, 512, "roberta-base", None)
    assert (config["num_attention_heads"], config["num_hidden_layers"], config["max_position_embeddings"]) == (12, 12, 514)
    assert text_config(base, 512, "roberta-base", 8)["num_attention_heads"] == 8


def refused(state: dict[str, torch.Tensor], match: str) -> None:
    with pytest.raises(CheckpointError, match=match):
        convert(state, "edited.pt", text_heads=TEXT_HEADS)


def test_a_missing_key_is_refused(state, tmp_path):
    edited = {k: v for k, v in state.items() if k != "audio_branch.layers.1.blocks.0.mlp.fc2.bias"}
    path = tmp_path / "missing.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in edited.items()}}, path)
    with pytest.raises(CheckpointError, match=r"missing key 'audio_branch\.layers\.1\.blocks\.0\.mlp\.fc2\.bias'"):
        read_laion_clap(path, text_heads=TEXT_HEADS)
    refused({k: v for k, v in state.items() if k != "text_branch.pooler.dense.weight"},
            r"missing key 'text_branch\.pooler\.dense\.weight'")


def test_an_unknown_key_is_refused(state):
    refused({**state, "audio_branch.extra.weight": torch.zeros(3)}, r"unexpected key 'audio_branch\.extra\.weight'")
    refused({**state, "text_branch.encoder.layer.0.attention.self.extra": torch.zeros(3)}, r"unexpected key")


def test_a_fused_checkpoint_is_refused(state):
    fused = {**state, "audio_branch.fusion_model.local_att.0.weight": torch.zeros(16, 64, 1, 1),
             "audio_branch.mel_conv1d.0.weight": torch.zeros(64, 64, 5)}
    refused(fused, r"a fused CLAP \(enable_fusion: 'audio_branch\.fusion_model\.local_att\.0\.weight'")


def test_other_text_branches_are_refused(state):
    types = "text_branch.embeddings.token_type_embeddings.weight"
    refused({**state, types: torch.zeros(2, 32)}, r"a BERT text branch \(token_type_embeddings rows: 2.*only LAION's RoBERTa")
    bart = {k: v for k, v in state.items() if not k.startswith("text_branch.")}
    bart.update({"text_branch.shared.weight": torch.zeros(64, 32),
                 "text_branch.decoder.layers.0.fc1.weight": torch.zeros(64, 32)})
    refused(bart, r"a BART text branch")
    clip = {k: v for k, v in state.items() if not k.startswith("text_branch.")}
    clip.update({"text_branch.resblocks.0.attn.in_proj_weight": torch.zeros(96, 32),
                 "token_embedding.weight": torch.zeros(64, 32)})
    refused(clip, r"a CLIP-style transformer text branch")


def test_another_frontend_is_refused(state):
    refused({**state, "audio_branch.logmel_extractor.melW": state["audio_branch.logmel_extractor.melW"] * 1.01},
            r"not the 64-band Slaney mel bank at 48000 Hz, 50-14000 Hz")


def test_a_tokenizer_directory_is_copied(tmp_path):
    from transformers import AutoTokenizer

    from tests.models.clap_fixtures import save_tokenizer

    save_tokenizer(tmp_path / "tokenizer")
    out = write_transformers_directory(CHECKPOINT, tmp_path / "clap", tmp_path / "tokenizer", text_heads=TEXT_HEADS)
    tokens = AutoTokenizer.from_pretrained(str(out))(["This is a sound of rain."])["input_ids"][0]
    assert tokens[0] == 0 and tokens[-1] == 2  # RoBERTa's <s> ... </s>
    assert (out / "tokenizer.json").is_file() and (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_export_names_the_pt_and_matches_laion(golden, tmp_path, capsys):
    from earshot import bundle
    from earshot.cli import main
    from earshot_export.parity import run_onnx

    out = tmp_path / "bundle"
    assert main(["export", f"laion_clap:{CHECKPOINT}", "--out", str(out), "--num-heads", str(TEXT_HEADS)]) == 0
    built = bundle.load(out, verify=True)
    manifest = built.manifest
    assert manifest.family == "clap" and manifest.name == "laion-clap-tiny" and manifest.parity["passed"]
    assert manifest.source["uri"] == str(CHECKPOINT.resolve())
    assert manifest.source["sha256"] == sha256_file(CHECKPOINT) and manifest.source["format"] == FORMAT
    assert (manifest.sample_rate, manifest.window_samples, manifest.embedding_dim) == (48000, 480000, 32)
    wave = golden["wave"]
    got = run_onnx(out / manifest.model_file, wave, np.full(len(wave), wave.shape[1], dtype=np.int64))
    assert_close(got["embedding"], golden["audio_embedding"])

    labels = tmp_path / "labels.txt"
    labels.write_text("speech\nmusic\n", encoding="utf-8")
    argv = ["export", f"laion_clap:{CHECKPOINT}", "--out", str(tmp_path / "zs"), "--num-heads", "2", "--labels", str(labels)]
    assert main(argv) != 0 and "holds no tokenizer" in capsys.readouterr().err
    assert not (tmp_path / "zs").exists()

    # with --tokenizer: zero-shot labels, and the text tower in the bundle reproduces LAION's text embeddings
    from tests.models.clap_fixtures import save_tokenizer

    save_tokenizer(tmp_path / "tokenizer")
    assert main([*argv, "--tokenizer", str(tmp_path / "tokenizer")]) == 0
    with_text = bundle.load(tmp_path / "zs", verify=True)
    assert with_text.labels == ["speech", "music"] and with_text.manifest.text is not None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(with_text.text_model_path), providers=["CPUExecutionProvider"])
    ids, mask = golden["input_ids"].astype(np.int64), golden["attention_mask"].astype(np.int64)
    (text,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
    assert_close(text, golden["text_embedding"])


def test_zero_shot_labels_with_a_tokenizer(golden, tmp_path):
    from earshot_export.loaders.laion_clap import load_laion_clap
    from tests.models.clap_fixtures import save_tokenizer

    save_tokenizer(tmp_path / "tokenizer")
    labels = ["speech", "music", "bird"]
    model = load_laion_clap(str(CHECKPOINT), labels=labels, tokenizer_dir=tmp_path / "tokenizer", num_heads=TEXT_HEADS)
    assert model.labels == labels and model.source["sha256"] == sha256_file(CHECKPOINT)
    with torch.no_grad():
        embedding, logits = model.module(torch.from_numpy(golden["wave"][:1]), torch.tensor([480000]))
    assert_close(embedding.numpy(), golden["audio_embedding"][:1])
    assert logits.shape == (1, 3) and torch.isfinite(logits).all()
    assert float(logits.abs().max()) <= np.exp(float(golden["logit_scale_a"])) + 1e-3  # scale * cosine
