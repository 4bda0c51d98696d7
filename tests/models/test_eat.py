"""EAT: our Kaldi frontend and EATEncoder (post-LN data2vec 2.0 blocks, cls pooling, fc_norm, head)
against golden vectors of EAT's own fairseq model classes (tests/models/data/eat, make_golden.py),
the converter's strictness, and `earshot export eat:` through ONNX Runtime."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from earshot_models.checkpoints import CheckpointError
from earshot_models.checkpoints.eat import ENCODER, POSITIONS, read_eat
from tests.models import variant_references as ref

DATA = Path(__file__).resolve().parent / "data" / "eat"
GOLDEN = DATA / "eat-tiny-a.pt"
FRONTEND_TOLERANCE = 1e-3  # ../shared/golden/README.md
MODEL_TOLERANCE = 1e-4  # given the golden frontend output
END_TO_END_TOLERANCE = 1e-4  # wave in: our frontend is close enough to hold the model's tolerance
WINDOW_SECONDS = 5.0  # the golden clips are 5 s: 498 frames, padded to the tiny model's 512
WINDOW_SAMPLES = 497 * 160 + 400
HEADS = 4  # in the file's cfg


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    return ref.golden_arrays(GOLDEN)


@pytest.fixture(scope="module")
def model():
    return read_eat(GOLDEN, window_seconds=WINDOW_SECONDS).build()


def golden_waveform(arrays: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """The golden waves in the 5 s window (every sample real: the reference saw the zero padding as audio)."""
    waves = np.stack([ref.fit(w, WINDOW_SAMPLES) for w in arrays["wave"]])
    return torch.from_numpy(waves), torch.full((len(waves),), WINDOW_SAMPLES)


def test_checkpoint_is_read_with_its_cfg():
    checkpoint = read_eat(GOLDEN, window_seconds=WINDOW_SECONDS)
    encoder = checkpoint.encoder
    assert (encoder.depth, encoder.embed_dim, encoder.num_heads, encoder.mlp_hidden_dim) == (2, 96, HEADS, 384)
    assert (encoder.input_tdim, encoder.grid, encoder.pooling, encoder.fc_norm) == (512, (32, 8), "cls", True)
    assert checkpoint.table_time_patches == 40 and checkpoint.state_dict["pos_embed"].shape == (1, 256, 96)
    assert (checkpoint.frontend.norm_mean, checkpoint.frontend.norm_std) == (-4.268, 4.569)
    assert (checkpoint.frontend.window_samples, checkpoint.frontend.computed_frames) == (WINDOW_SAMPLES, 498)
    info = json.loads((DATA / "eat-tiny-a-golden.json").read_text())
    assert info["config"]["num_heads"] == HEADS and len(info["checkpoint_keys"]) == 34


def test_frontend_matches_golden(golden, model):
    with torch.no_grad():
        fbank = model.frontend(*golden_waveform(golden))
    assert fbank.shape == (3, 512, 128)
    np.testing.assert_allclose(fbank.numpy(), golden["fbank"], rtol=0, atol=FRONTEND_TOLERANCE)
    np.testing.assert_allclose(fbank.numpy()[:, 498:], 4.268 / (2 * 4.569), rtol=0, atol=1e-6)  # padded frames


def test_encoder_given_golden_frontend(golden, model):
    with torch.no_grad():
        embedding, logits = model.encoder(torch.from_numpy(golden["fbank"]))
    assert np.abs(golden["logits"]).max() > 1.0
    np.testing.assert_allclose(embedding.numpy(), golden["embedding"], rtol=0, atol=MODEL_TOLERANCE)
    np.testing.assert_allclose(logits.numpy(), golden["logits"], rtol=0, atol=MODEL_TOLERANCE)


def test_end_to_end_matches_golden(golden, model):
    with torch.no_grad():
        embedding, logits = model(*golden_waveform(golden))
    np.testing.assert_allclose(embedding.numpy(), golden["embedding"], rtol=0, atol=END_TO_END_TOLERANCE)
    np.testing.assert_allclose(logits.numpy(), golden["logits"], rtol=0, atol=END_TO_END_TOLERANCE)


# -- a configuration the golden file does not cover, against the recipe written out ------------------


def eat_recipe(state: dict, fbank: torch.Tensor, heads: int, pooling: str) -> tuple[torch.Tensor, torch.Tensor]:
    """tests/models/data/eat/README.md's model, in plain torch ops on the file's own keys."""
    e = lambda name: state[ENCODER + name]  # noqa: E731
    x = F.conv2d(fbank[:, None], e("local_encoder.proj.weight"), e("local_encoder.proj.bias"), stride=16)
    x = x.flatten(2).transpose(1, 2)  # time-major
    x = x + e("fixed_positional_encoder.positions")[:, : x.shape[1]]
    x = torch.cat([e("extra_tokens").expand(x.shape[0], -1, -1), x], 1)
    x = F.layer_norm(x, x.shape[-1:], e("context_encoder.norm.weight"), e("context_encoder.norm.bias"), eps=1e-6)
    for i in range(len({k.split(".")[2] for k in state if k.startswith("model.blocks.")})):
        p = lambda name: state[f"model.blocks.{i}.{name}"]  # noqa: E731, B023
        batch, tokens, dim = x.shape
        qkv = F.linear(x, p("attn.qkv.weight"), p("attn.qkv.bias")).reshape(batch, tokens, 3, heads, dim // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        h = ((q @ k.transpose(-2, -1)) / math.sqrt(dim // heads)).softmax(-1) @ v
        x = x + F.linear(h.transpose(1, 2).reshape(batch, tokens, dim), p("attn.proj.weight"), p("attn.proj.bias"))
        x = F.layer_norm(x, x.shape[-1:], p("norm1.weight"), p("norm1.bias"), eps=1e-6)
        h = F.linear(F.gelu(F.linear(x, p("mlp.fc1.weight"), p("mlp.fc1.bias"))), p("mlp.fc2.weight"), p("mlp.fc2.bias"))
        x = F.layer_norm(x + h, x.shape[-1:], p("norm2.weight"), p("norm2.bias"), eps=1e-6)
    pooled = x[:, 0] if pooling == "cls" else x[:, 1:].mean(1)
    if "fc_norm.weight" in state:
        pooled = F.layer_norm(pooled, pooled.shape[-1:], state["fc_norm.weight"], state["fc_norm.bias"], eps=1e-6)
    return pooled, F.linear(pooled, state["head.weight"], state["head.bias"])


def derived(tmp_path: Path, name: str, state_edit=None, cfg_edit=None, drop_cfg: bool = False) -> Path:
    """The golden file with its state dict and cfg edited, saved as `name`."""
    data = torch.load(GOLDEN, weights_only=True)
    if state_edit:
        data["model"] = state_edit(dict(data["model"]))
    if cfg_edit:
        cfg_edit(data["cfg"])
    if drop_cfg:
        del data["cfg"]
    path = tmp_path / name
    torch.save(data, path)
    return path


def test_mean_pooling_without_fc_norm_and_fp16_file_matches_recipe(tmp_path, audio_dir):
    """MEAN_POOLING, no fc_norm, an fp16 state dict (fairseq --fp16 files), a 3 s window."""

    def edit_state(state):
        return {k: v.half() for k, v in state.items() if not k.startswith("fc_norm")}

    def edit_cfg(cfg):
        cfg["model"]["prediction_mode"] = "MEAN_POOLING"
        cfg["model"]["use_fc_norm"] = False

    path = derived(tmp_path, "eat-mean.pt", edit_state, edit_cfg)
    checkpoint = read_eat(path, window_seconds=3.0)
    assert (checkpoint.encoder.pooling, checkpoint.encoder.fc_norm) == ("mean_patch", False)
    model = checkpoint.build()
    clips = [ref.read_clip(audio_dir / name, 16000) for name in ("choir.flac", "drum_snare.flac")]
    window = model.frontend.window_samples
    real = torch.tensor([min(len(clip), window) for clip in clips])
    assert real[1] < window  # the snare is shorter than the window: padded frames
    with torch.no_grad():
        fbank = model.frontend(torch.from_numpy(np.stack([ref.fit(c, window) for c in clips])), real)
        embedding, logits = model.encoder(fbank)
    state = {k: v.float() for k, v in torch.load(path, weights_only=True)["model"].items()}
    expected_embedding, expected_logits = eat_recipe(state, fbank, HEADS, "mean_patch")
    np.testing.assert_allclose(embedding.numpy(), expected_embedding.numpy(), rtol=0, atol=MODEL_TOLERANCE)
    np.testing.assert_allclose(logits.numpy(), expected_logits.numpy(), rtol=0, atol=MODEL_TOLERANCE)


def test_recipe_reproduces_golden(golden):
    """The written-out recipe is itself the reference's arithmetic."""
    state = torch.load(GOLDEN, weights_only=True)["model"]
    embedding, logits = eat_recipe(state, torch.from_numpy(golden["fbank"]), HEADS, "cls")
    np.testing.assert_allclose(logits.numpy(), golden["logits"], rtol=0, atol=MODEL_TOLERANCE)


# -- strictness ----------------------------------------------------------------------------------------


def test_bad_checkpoints_are_refused_clearly(tmp_path):
    def set_key(section: str, key: str, value):
        def edit(cfg):
            target = cfg["model"]
            for part in section.split(".") if section else []:
                target = target[part]
            target[key] = value

        return edit

    image = "pretrained_model_args.model.modalities.image"
    bad = {
        "pretraining": (dict(state_edit=lambda s: {k.removeprefix("model."): v for k, v in s.items()
                                                     if k.startswith("model.")}), "pre-training checkpoint"),
        "unexpected": (dict(state_edit=lambda s: {**s, "model.blocks.0.attn.extra.weight": torch.ones(1)}),
                       "unexpected key 'model.blocks.0.attn.extra.weight'"),
        "missing": (dict(state_edit=lambda s: {k: v for k, v in s.items() if "context_encoder.norm.bias" not in k}),
                    "missing key 'model.modality_encoders.IMAGE.context_encoder.norm.bias'"),
        "shape": (dict(state_edit=lambda s: {**s, "model.blocks.1.mlp.fc2.weight": torch.ones(96, 383)}),
                  "'model.blocks.1.mlp.fc2.weight' has shape"),
        "short-table": (dict(state_edit=lambda s: {**s, POSITIONS: s[POSITIONS][:, :240]}),
                        "32 time patches; the position table .* holds 30"),
        "two-tokens": (dict(state_edit=lambda s: {**s, ENCODER + "extra_tokens": torch.zeros(1, 2, 96)}),
                       "one cls token"),
        "pre-ln": (dict(cfg_edit=set_key("pretrained_model_args.model", "layer_norm_first", True)),
                   "layer_norm_first = True"),
        "prenet": (dict(cfg_edit=set_key(image, "prenet_depth", 2)), "prenet_depth = 2"),
        "alibi": (dict(cfg_edit=set_key(image, "use_alibi_encoder", True)), "use_alibi_encoder = True"),
        "lin-softmax": (dict(cfg_edit=set_key("", "prediction_mode", "LIN_SOFTMAX")), "LIN_SOFTMAX is not supported"),
        "fc-norm-cfg": (dict(cfg_edit=set_key("", "use_fc_norm", False)), "use_fc_norm is False but the file has"),
        "not-eat": (dict(cfg_edit=set_key("", "_name", "wav2vec2")), "not 'mae_image_classification'"),
        "no-cfg": (dict(drop_cfg=True), "no cfg.model.pretrained_model_args.model.num_heads; give num_heads"),
    }
    for label, (edits, message) in bad.items():
        with pytest.raises(CheckpointError, match=message):
            read_eat(derived(tmp_path, f"{label}.pt", **edits), window_seconds=WINDOW_SECONDS)
    with pytest.raises(CheckpointError, match="says 4 attention heads, 6 were given"):
        read_eat(GOLDEN, window_seconds=WINDOW_SECONDS, num_heads=6)
    with pytest.raises(CheckpointError, match="target_length 512"):
        read_eat(GOLDEN)  # the default 10 s window is longer than the tiny model's 512 frames
    bare = tmp_path / "bare.pt"
    torch.save(torch.load(GOLDEN, weights_only=True)["model"], bare)
    with pytest.raises(CheckpointError, match="expected a fairseq checkpoint"):
        read_eat(bare)
    # Without a cfg, the heads come from the caller and the rest from the file (target_length 1024 then).
    no_cfg = derived(tmp_path, "no-cfg-ok.pt", drop_cfg=True)
    with pytest.raises(CheckpointError, match="64 time patches; the position table .* holds 40"):
        read_eat(no_cfg, num_heads=HEADS)


# -- export ----------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_export_cli_reproduces_golden_logits(golden, tmp_path, capsys):
    import onnxruntime as ort

    from earshot import bundle
    from earshot.cli import main
    from earshot_export.audioset import audioset_labels

    out = tmp_path / "eat"
    code = main(["export", f"eat:{GOLDEN}", "--out", str(out), "--window-seconds", str(WINDOW_SECONDS)])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["parity"]["passed"] is True
    loaded = bundle.load(out, verify=True)
    manifest = loaded.manifest
    assert (manifest.family, manifest.name, manifest.sample_rate, manifest.window_samples) == (
        "eat", "eat-tiny-a", 16000, WINDOW_SAMPLES)
    assert manifest.padding.mode == "frames" and manifest.takes_num_samples and manifest.num_labels == 527
    assert loaded.labels == audioset_labels()
    assert manifest.notes["fused_operators"]["Attention"] == 2  # both layers' attention, fused

    session = ort.InferenceSession(str(out / bundle.MODEL_FILE), providers=["CPUExecutionProvider"])
    waveform, num_samples = golden_waveform(golden)
    embedding, logits = session.run(None, {"waveform": waveform.numpy(), "num_samples": num_samples.numpy()})
    np.testing.assert_allclose(embedding, golden["embedding"], rtol=0, atol=END_TO_END_TOLERANCE)
    np.testing.assert_allclose(logits, golden["logits"], rtol=0, atol=END_TO_END_TOLERANCE)


def test_source_scheme_and_options():
    from earshot_export.sources import ExportOptions, SourceError, load_torch_model, parse_source

    assert parse_source(f"eat:{GOLDEN}") == ("eat", str(GOLDEN))
    with pytest.raises(SourceError, match="16x16 without overlap"):
        load_torch_model("eat", str(GOLDEN), ExportOptions(fstride=10))
    model = load_torch_model("eat", str(GOLDEN), ExportOptions(name="mine", window_seconds=WINDOW_SECONDS))
    assert (model.name, model.family, model.window_samples, model.labels[137]) == ("mine", "eat", WINDOW_SAMPLES, "Music")
