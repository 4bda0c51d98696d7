"""Golden vectors of LAION's own CLAP (laion_clap 1.1.7) at a tiny geometry, random weights.

Run with the reference installed, in its own venv (not the project's):

    python3 -m venv /work/laion-venv
    /work/laion-venv/bin/pip install torch==2.13.0            # first, or pip pulls a CUDA build
    /work/laion-venv/bin/pip install laion-clap==1.1.7
    /work/laion-venv/bin/python tests/models/data/laion_clap/make_golden.py

Writes beside this file: laion-clap-tiny.pt (the published layout: {"state_dict": {"module." + key:
tensor}, "epoch": N}), laion-clap-tiny-golden.npz and laion-clap-tiny-golden.json. README.md says what
they hold. No network: the two `from_pretrained('roberta-base')` calls (model and tokenizer) are
replaced, the HTS-AT factory builds a tiny Swin, and torchvision (imported by laion_clap for images
and for fused mel shrinking, neither used here) is stood in by an empty module.
"""

from __future__ import annotations

import json
import math
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
AUDIO_DIR = HERE.parents[3] / ".." / "shared" / "audio"
SEED = 20240611
SAMPLE_RATE = 48000
WINDOW = 480000  # 10 s at 48 kHz: get_audio_embedding_from_data's max_len
CLIPS = ("speech_spanish_16s.ogg", "music_piano.flac", "bird_crow.ogg")  # cut, repeat-padded x3, x5
NUM_CLASSES = 7
JOINT = 32  # joint embedding (released: 512)
HTSAT = dict(spec_size=256, patch_size=4, patch_stride=(4, 4), embed_dim=16, depths=[2, 1, 2, 2],
             num_heads=[2, 2, 4, 4], window_size=8)  # released tiny: 96 wide, [2, 2, 6, 2], [4, 8, 16, 32], 8
ROBERTA = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=34, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
               bos_token_id=0, eos_token_id=2, hidden_act="gelu")  # roberta-base's rules, 32 wide
INPUT_IDS = [  # <s>=0, <pad>=1, </s>=2; made-up words in 3..63
    [0, 17, 9, 44, 5, 2, 1, 1, 1, 1, 1, 1],
    [0, 63, 3, 3, 28, 31, 12, 50, 7, 19, 22, 2],
    [0, 8, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    [0, 40, 41, 42, 43, 6, 2, 1, 1, 1, 1, 1],
]


def stub_torchvision() -> None:
    """laion_clap imports torchvision for image transforms, FrozenBatchNorm2d and fused mel shrinking;
    the wheel for CPU torch 2.13 is not on this machine and none of those paths run here."""
    names = ("torchvision", "torchvision.ops", "torchvision.ops.misc", "torchvision.transforms", "torchvision.datasets")
    for name in names:
        sys.modules[name] = types.ModuleType(name)
    sys.modules["torchvision.ops.misc"].FrozenBatchNorm2d = type("FrozenBatchNorm2d", (torch.nn.Module,), {})
    transforms = sys.modules["torchvision.transforms"]
    for name in ("Normalize", "Compose", "RandomResizedCrop", "InterpolationMode", "ToTensor", "Resize", "CenterCrop"):
        setattr(transforms, name, type(name, (), {}))
    sys.modules["torchvision"].transforms = transforms
    sys.modules["torchvision"].datasets = sys.modules["torchvision.datasets"]
    sys.modules["torchvision"].ops = sys.modules["torchvision.ops"]


def build_reference():
    """LAION's CLAP_Module (HTSAT audio branch, RoBERTa text branch), tiny, in eval mode."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # anything not stood in below fails at once instead of retrying
    import transformers  # first: transformers probes for torchvision
    from transformers import RobertaConfig, RobertaModel

    def no_tokenizer(cls, name, *args, **kwargs):
        return None  # the golden ids are made up; no tokenizer is ever called

    # laion_clap.training.data loads BERT, RoBERTa and BART tokenizers when imported, the hook another
    for tokenizer_class in (transformers.BertTokenizer, transformers.RobertaTokenizer, transformers.BartTokenizer):
        tokenizer_class.from_pretrained = classmethod(no_tokenizer)
    stub_torchvision()
    import laion_clap

    # laion_clap puts its own folder on sys.path and imports `clap_module` as a top-level package
    clap_model = sys.modules["clap_module.model"]
    htsat = sys.modules["clap_module.htsat"]

    def tiny_htsat(audio_cfg, enable_fusion=False, fusion_type="None"):
        assert not enable_fusion
        # 7 classes, not AudioSet's 527: the head (tscam_conv, head) is not part of the embedding
        return htsat.HTSAT_Swin_Transformer(num_classes=NUM_CLASSES, config=audio_cfg,
                                            enable_fusion=False, fusion_type=fusion_type, **HTSAT)

    class TinyRoberta:
        @staticmethod
        def from_pretrained(name, *args, **kwargs):
            assert name == "roberta-base", name
            return RobertaModel(RobertaConfig(**ROBERTA))

    clap_model.create_htsat_model = tiny_htsat
    clap_model.RobertaModel = TinyRoberta
    module = laion_clap.CLAP_Module(enable_fusion=False, device="cpu", amodel="HTSAT-tiny", tmodel="roberta")
    model = module.model
    # CLAP.__init__ sizes these for roberta-base (768 in) and a 512-wide joint space: rebuild them tiny,
    # with the same modules, so that the checkpoint keeps the published layout
    width = model.audio_branch.num_features
    relu = torch.nn.ReLU()
    model.joint_embed_shape = JOINT
    model.audio_projection = torch.nn.Sequential(torch.nn.Linear(width, JOINT), relu, torch.nn.Linear(JOINT, JOINT))
    model.text_projection = torch.nn.Sequential(
        torch.nn.Linear(ROBERTA["hidden_size"], JOINT), relu, torch.nn.Linear(JOINT, JOINT))
    model.audio_transform = clap_model.MLPLayers(units=[JOINT, JOINT, JOINT], dropout=0.1)
    model.text_transform = clap_model.MLPLayers(units=[JOINT, JOINT, JOINT], dropout=0.1)
    return module


FRONTEND_KEYS = ("spectrogram_extractor", "logmel_extractor")  # STFT basis and mel bank: kept as built
FIXED = ("relative_position_index", "attn_mask", "position_ids", "num_batches_tracked")


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Unit-scale random weights (the house rule, shared/golden/README.md): matrices N(0, 1/fan_in),
    norm weights 1 + N(0, 0.3), biases N(0, 0.1), embeddings and relative position bias tables
    N(0, 0.5); bn0's running stats at dB scale (mean -40 + 10 N(0,1), var 100 (1 + |N(0,1)|))."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if any(k in name for k in FRONTEND_KEYS + FIXED) or not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.startswith("logit_scale"):
                tensor.copy_(torch.tensor(math.log(30.0 if name.endswith("_a") else 20.0)))
            elif name.endswith("running_mean"):
                tensor.copy_(-40.0 + 10.0 * noise)
            elif name.endswith("running_var"):
                tensor.copy_(100.0 * (1.0 + noise.abs()))
            elif "embeddings" in name and name.endswith("weight") and tensor.ndim == 2 or name.endswith("bias_table"):
                tensor.copy_(0.5 * noise)
            elif name.endswith("bias"):
                tensor.copy_(0.1 * noise)
            elif tensor.ndim == 1:
                tensor.copy_(1.0 + 0.3 * noise)
            else:
                tensor.copy_(noise / math.sqrt(tensor[0].numel()))


def read_clip(path: Path) -> np.ndarray:
    """Mono (mean of channels) float32 at 48 kHz (soxr, VHQ)."""
    import soundfile
    import soxr

    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    return soxr.resample(mono, rate, SAMPLE_RATE, quality="VHQ").astype(np.float32)


def main() -> None:
    torch.manual_seed(SEED)
    module = build_reference()
    model = module.model
    randomise(model, SEED)
    model.eval()
    import laion_clap
    from laion_clap.training.data import float32_to_int16, get_audio_features, int16_to_float32

    clips = [read_clip(AUDIO_DIR / name) for name in CLIPS]
    with torch.no_grad():
        np.random.seed(SEED)  # the random 10 s crop of clips longer than the window
        audio_embedding = module.get_audio_embedding_from_data(clips, use_tensor=False)
        # the windows that call fed the model: the same steps, the same random state
        np.random.seed(SEED)
        waves, counts = [], []
        for clip in clips:
            quantised = torch.from_numpy(int16_to_float32(float32_to_int16(clip))).float()
            sample = get_audio_features({}, quantised, WINDOW, data_truncating="rand_trunc", data_filling="repeatpad",
                                        audio_cfg=module.model_cfg["audio_cfg"])
            waves.append(sample["waveform"].numpy())
            counts.append(min(len(clip), WINDOW))
        wave = np.stack(waves).astype(np.float32)
        again = model.get_audio_embedding([{"waveform": torch.from_numpy(w), "longer": torch.tensor([False])}
                                           for w in wave]).numpy()
        assert np.array_equal(again, audio_embedding), np.abs(again - audio_embedding).max()
        input_ids = torch.tensor(INPUT_IDS, dtype=torch.long)
        attention_mask = (input_ids != ROBERTA["pad_token_id"]).long()
        text_embedding = model.get_text_embedding({"input_ids": input_ids.clone(),
                                                   "attention_mask": attention_mask.clone()}).numpy()
        logmel = model.audio_branch.logmel_extractor(
            model.audio_branch.spectrogram_extractor(torch.from_numpy(wave)))[:, 0].numpy()  # (B, frames, mel)

    state = dict(model.state_dict())
    # the released files were saved with transformers < 4.31, whose RoBERTa kept position_ids in
    # the state dict (laion_clap's load_state_dict deletes it on newer transformers): so does this one
    position_key = "text_branch.embeddings.position_ids"
    if position_key not in state:
        state[position_key] = torch.arange(ROBERTA["max_position_embeddings"]).expand((1, -1)).clone()
    state = {key: value.detach().clone().contiguous() for key, value in state.items()}
    torch.save({"state_dict": {"module." + key: value for key, value in state.items()}, "epoch": 15},
               HERE / "laion-clap-tiny.pt")

    golden = dict(
        wave=wave,
        num_samples=np.array(counts, dtype=np.int64),
        logmel=logmel.astype(np.float32),
        audio_embedding=audio_embedding.astype(np.float32),
        input_ids=input_ids.numpy(),
        attention_mask=attention_mask.numpy(),
        text_embedding=text_embedding.astype(np.float32),
        logit_scale_a=np.float32(model.logit_scale_a.item()),
    )
    np.savez_compressed(HERE / "laion-clap-tiny-golden.npz", **golden)
    import transformers

    info = dict(
        reference=f"laion_clap {getattr(laion_clap, '__version__', '1.1.7')} (clap_module.model.CLAP, "
                  "clap_module.htsat.HTSAT_Swin_Transformer, transformers RobertaModel)",
        versions=dict(torch=torch.__version__, transformers=transformers.__version__, numpy=np.__version__),
        seed=SEED,
        clips=list(CLIPS),
        audio_cfg=module.model_cfg["audio_cfg"],  # HTSAT-tiny.json's (class_num: the head below has NUM_CLASSES)
        htsat={**{k: list(v) if isinstance(v, tuple) else v for k, v in HTSAT.items()}, "num_classes": NUM_CLASSES},
        roberta=ROBERTA,
        joint_embed_shape=JOINT,
        shapes={name: list(np.shape(value)) for name, value in golden.items()},
        checkpoint_keys={key: list(value.shape) for key, value in state.items()},
    )
    (HERE / "laion-clap-tiny-golden.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    print("audio", audio_embedding[:, :4], "\ntext", text_embedding[:, :4])


if __name__ == "__main__":
    main()
