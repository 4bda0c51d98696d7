"""Golden vectors of EAT (cwx-worst-one/EAT), made with its own fairseq model classes.

Run in a venv of its own (README.md here), with the reference's git directory as fetched:

    /work/eat-venv/bin/python tests/models/data/eat/make_golden.py --eat-git-dir /work/.mirror/cwx-worst-one+EAT/repo

What runs is the reference's `models/` package (EAT_audio_classification.MaeImageClassificationModel
around EAT_pretraining.Data2VecMultiModel, images.ImageEncoder, modules.AltBlock, ...), copied out of
the git directory into --ref-dir with two kinds of minimal edits (PATCHES below: dataclass defaults
Python 3.11 refuses), and with fairseq, torchaudio and torchvision stood in by stubs (STUBS below):
only registration decorators, base classes and helpers the inference path never calls. timm is the
real timm (its `timm.layers`; `timm.models.*` names the reference imports are forwarded there, since
`timm.models` imports torchvision's transforms).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch

HERE = Path(__file__).resolve().parent
AUDIO_DIR = HERE.parents[3].parent / "shared" / "audio"
STEM = "eat-tiny-a"
SEED = 20240105
SAMPLE_RATE = 16000
WAVE_SAMPLES = 5 * SAMPLE_RATE  # 5 s: 498 Kaldi frames, padded to TARGET_LENGTH
TARGET_LENGTH = 512  # frames the fbank is padded/cut to (the released files: 1024)
MAX_LENGTH = 40  # time rows of the fixed position table (released: 768, up to 2 min); 32 are used
CLIPS = ("speech_spanish_16s.ogg", "music_guitar.flac", "bird_rooster.ogg")
NORM_MEAN, NORM_STD = -4.268, 4.569  # EAT's AudioSet fbank statistics (raw_audio_dataset.py, inference.py)
TINY = dict(depth=2, embed_dim=96, num_heads=4, mlp_ratio=4.0, num_classes=527)

REFERENCE_FILES = (
    "models/__init__.py",
    "models/EAT_audio_classification.py",
    "models/EAT_pretraining.py",
    "models/base.py",
    "models/images.py",
    "models/modules.py",
    "models/mae.py",
)
# (file, old, new): Python 3.11 refuses dataclass instances as field defaults (unhashable); the
# reference was written for 3.8. default_factory gives every instance the same values.
PATCHES = (
    ("models/EAT_pretraining.py", "image: D2vImageConfig = D2vImageConfig()",
     "image: D2vImageConfig = field(default_factory=D2vImageConfig)"),
    ("models/EAT_pretraining.py", "modalities: D2vModalitiesConfig = D2vModalitiesConfig()",
     "modalities: D2vModalitiesConfig = field(default_factory=D2vModalitiesConfig)"),
    ("models/base.py", "from dataclasses import dataclass\n", "from dataclasses import dataclass, field\n"),
    ("models/base.py", "decoder: Optional[D2vDecoderConfig] = D2vDecoderConfig()",
     "decoder: Optional[D2vDecoderConfig] = field(default_factory=D2vDecoderConfig)"),
)

# Stand-ins: fairseq (not installable on Python 3.11 with this torch) for the names the model files
# import; nothing here computes anything on the inference path.
STUBS = {
    "fairseq/__init__.py": "",
    "fairseq/dataclass/__init__.py": """
from dataclasses import dataclass
from typing import Optional

@dataclass
class FairseqDataclass:
    _name: Optional[str] = None
""",
    "fairseq/models/__init__.py": """
import torch.nn as nn

MODEL_REGISTRY = {}

def register_model(name, dataclass=None):
    def register(cls):
        MODEL_REGISTRY[name] = cls
        return cls
    return register

class BaseFairseqModel(nn.Module):
    def set_num_updates(self, num_updates):
        pass
""",
    "fairseq/models/wav2vec/__init__.py": "",
    "fairseq/models/wav2vec/wav2vec2.py": "class TransformerSentenceEncoderLayer: pass\n",
    "fairseq/tasks/__init__.py": """
from fairseq.models import MODEL_REGISTRY

class FairseqTask:
    pass

def register_task(name, dataclass=None):
    return lambda cls: cls

class _BuildOnly(FairseqTask):
    # fairseq's task.build_model(cfg) -> MODEL_REGISTRY[cfg._name].build_model(cfg, task)
    def build_model(self, cfg, from_checkpoint=False):
        return MODEL_REGISTRY[cfg._name].build_model(cfg, task=None)

def setup_task(cfg, **kwargs):
    return _BuildOnly()
""",
    "fairseq/checkpoint_utils.py": """
def load_checkpoint_to_cpu(path, arg_overrides=None):
    raise NotImplementedError("golden vectors are made from random weights, no checkpoint is read")
""",
    "fairseq/modules/__init__.py": """
class _Unused:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("not on EAT's inference path")

EMAModule = EMAModuleConfig = GradMultiply = LayerNorm = SamePad = SamePad2d = TransposeLast = _Unused
""",
    "fairseq/modules/transformer_sentence_encoder.py": """
def init_bert_params(module):
    pass  # fairseq's initialisation; every weight is overwritten with the golden random values
""",
    "fairseq/data/__init__.py": "",
    "fairseq/data/data_utils.py": """
def compute_mask_indices(*args, **kwargs):
    raise NotImplementedError("masking is pre-training only")
""",
    "fairseq/utils.py": """
def index_put(tensor, indices, value):
    tensor[indices] = value
    return tensor
""",
    "fairseq/logging/__init__.py": "",
    "fairseq/logging/metrics.py": "",
    # torchaudio is imported only for SpecAugment in training (torchaudio.transforms); the frontend
    # below stands in for torchaudio.compliance.kaldi.fbank in float64.
    "torchaudio/__init__.py": "",
    # timm.layers imports FrozenBatchNorm2d from torchvision at import time (the torchvision wheel
    # for torch 2.13 needs CUDA libraries this machine lacks).
    "torchvision/__init__.py": "",
    "torchvision/ops/__init__.py": "",
    "torchvision/ops/misc.py": "import torch\nclass FrozenBatchNorm2d(torch.nn.Module):\n    pass\n",
}


def prepare_reference(git_dir: Path, ref_dir: Path) -> str:
    """Copy the reference's model files out of its git directory, patch, write the stubs; the commit."""
    commit = subprocess.run(["git", f"--git-dir={git_dir}", "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    for name in REFERENCE_FILES:
        text = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"HEAD:{name}"], check=True,
                              capture_output=True, text=True).stdout
        for file, old, new in PATCHES:
            if file == name:
                assert text.count(old) == 1, (file, old)
                text = text.replace(old, new)
        target = ref_dir / "EAT" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (ref_dir / "EAT" / "__init__.py").write_text("")
    for name, text in STUBS.items():
        target = ref_dir / "stubs" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text.lstrip("\n"))
    return commit


def import_reference(ref_dir: Path):
    sys.path[:0] = [str(ref_dir / "stubs"), str(ref_dir)]
    # the real timm.layers, without timm/__init__ (which imports timm.models -> timm.data -> torchvision)
    spec = importlib.util.find_spec("timm")
    timm = types.ModuleType("timm")
    timm.__path__ = list(spec.submodule_search_locations)
    sys.modules["timm"] = timm
    layers = importlib.import_module("timm.layers")
    models = types.ModuleType("timm.models")
    models.__path__ = []
    vit = types.ModuleType("timm.models.vision_transformer")
    vit.DropPath, vit.Mlp, vit.PatchEmbed = layers.DropPath, layers.Mlp, layers.PatchEmbed
    vit.Block = None  # imported by mae.py's MaeModel, which EAT does not build
    sys.modules.update({"timm.models": models, "timm.models.vision_transformer": vit, "timm.models.layers": layers})
    classification = importlib.import_module("EAT.models.EAT_audio_classification")
    pretraining = importlib.import_module("EAT.models.EAT_pretraining")
    return classification, pretraining


# -- frontend: torchaudio.compliance.kaldi.fbank as EAT calls it, in float64 ---------------------------


def mel(hz):
    return 1127.0 * np.log(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def kaldi_fbank(wave: np.ndarray) -> np.ndarray:
    """fbank(w - mean(w), htk_compat=True, sample_frequency=16000, use_energy=False, window_type='hanning',
    num_mel_bins=128, dither=0.0, frame_shift=10) -> pad (log-mel 0) / cut to TARGET_LENGTH ->
    (x - NORM_MEAN) / (2 * NORM_STD), as raw_audio_dataset.py and inference/inference.py."""
    w = wave.astype(np.float64)
    w = w - w.mean()
    count = 1 + (len(w) - 400) // 160  # snip edges
    frames = np.stack([w[i * 160 : i * 160 + 400] for i in range(count)])
    frames = frames - frames.mean(axis=1, keepdims=True)  # remove_dc_offset
    frames = frames - 0.97 * np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)  # replicate-padded preemphasis
    frames = frames * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 399))  # torch.hann_window(periodic=False)
    power = np.abs(np.fft.rfft(frames, n=512)) ** 2  # (T, 257)
    edges = mel(20.0) + np.arange(130) * (mel(8000.0) - mel(20.0)) / 129
    bins = mel(np.arange(256) * 16000 / 512)
    banks = np.zeros((128, 257))
    for m in range(128):
        up = (bins - edges[m]) / (edges[m + 1] - edges[m])
        down = (edges[m + 2] - bins) / (edges[m + 2] - edges[m + 1])
        banks[m, :256] = np.maximum(0.0, np.minimum(up, down))
    fbank = np.log(np.maximum(power @ banks.T, np.finfo(np.float32).eps))
    fbank = np.pad(fbank, ((0, max(0, TARGET_LENGTH - count)), (0, 0)))[:TARGET_LENGTH]  # ZeroPad2d / cut
    return ((fbank - NORM_MEAN) / (NORM_STD * 2)).astype(np.float32)


def read_clip(path: Path) -> np.ndarray:
    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    out = np.zeros(WAVE_SAMPLES, dtype=np.float32)
    out[: min(WAVE_SAMPLES, len(mono))] = mono[:WAVE_SAMPLES]
    return out


# -- model ---------------------------------------------------------------------------------------------


def build(classification, pretraining):
    """MaeImageClassificationModel as fine-tuning builds it (config/finetuning.yaml, CLS_TOKEN), over a
    tiny Data2VecMultiModel configured as config/pretraining_AS2M.yaml (prenet_depth 0, one extra
    token, no alibi, post-LN blocks: layer_norm_first False)."""
    from omegaconf import OmegaConf

    model_cfg = OmegaConf.structured(pretraining.Data2VecMultiConfig)
    model_cfg = OmegaConf.merge(model_cfg, {
        "_name": "data2vec_multi", "depth": TINY["depth"], "embed_dim": TINY["embed_dim"],
        "num_heads": TINY["num_heads"], "mlp_ratio": TINY["mlp_ratio"], "norm_eps": 1e-6, "layer_norm_first": False,
        "supported_modality": "IMAGE", "skip_ema": True, "cls_loss": 1, "average_top_k_layers": TINY["depth"],
        "modalities": {"image": {
            "in_chans": 1, "embed_dim": TINY["embed_dim"], "prenet_depth": 0, "num_extra_tokens": 1,
            "init_extra_token_zero": False, "use_alibi_encoder": False, "target_length": TARGET_LENGTH,
            "max_length": MAX_LENGTH, "decoder": None,
        }},
    })  # fmt: skip
    pretrained_args = OmegaConf.create({
        "task": {"_name": "mae_image_pretraining"}, "model": model_cfg,
        "common": {"seed": 1}, "optimization": {"max_update": 1},
    })  # fmt: skip
    cfg = classification.MaeImageClassificationConfig(
        model_path="unused", pretrained_model_args=pretrained_args, num_classes=TINY["num_classes"],
        audio_mae=True, target_length=TARGET_LENGTH, prediction_mode=classification.PredictionMode.CLS_TOKEN,
        use_fc_norm=True, specaug=False, mixup=0.0, cutmix=0.0,
    )  # fmt: skip
    return classification.MaeImageClassificationModel(cfg), cfg


def randomise(model: torch.nn.Module, seed: int) -> None:
    """../shared/golden/README.md: matrices N(0, 1/fan_in), norm weights 1 + N(0, 0.3), biases
    N(0, 0.1), tokens and position tables N(0, 0.5)."""
    generator = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    for key, value in state.items():
        noise = torch.randn(value.shape, generator=generator)
        if "token" in key or "positions" in key:
            state[key] = 0.5 * noise
        elif key.endswith("bias"):
            state[key] = 0.1 * noise
        elif value.ndim == 1:
            state[key] = 1.0 + 0.3 * noise
        else:
            state[key] = noise / math.sqrt(math.prod(value.shape[1:]))
    model.load_state_dict(state, strict=True)


def checkpoint_cfg(cfg) -> dict:
    """The `cfg` fairseq saves: OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)."""
    from omegaconf import OmegaConf

    root = OmegaConf.create({
        "common": {"seed": 1}, "task": {"_name": "mae_image_classification", "data": "unused", "audio_mae": True,
                                        "target_length": TARGET_LENGTH},
        "model": OmegaConf.merge(OmegaConf.structured(type(cfg)), {
            "_name": "mae_image_classification", "model_path": "unused", "num_classes": cfg.num_classes,
            "audio_mae": True, "target_length": TARGET_LENGTH, "prediction_mode": "CLS_TOKEN",
            "pretrained_model_args": OmegaConf.to_container(cfg.pretrained_model_args, resolve=True,
                                                            enum_to_str=True),
        }),
    })  # fmt: skip
    return OmegaConf.to_container(root, resolve=True, enum_to_str=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eat-git-dir", type=Path, required=True)
    parser.add_argument("--ref-dir", type=Path, default=Path("/work/eat-ref"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    commit = prepare_reference(args.eat_git_dir, args.ref_dir)
    classification, pretraining = import_reference(args.ref_dir)
    model, cfg = build(classification, pretraining)
    randomise(model, SEED)
    model.eval()

    waves = np.stack([read_clip(AUDIO_DIR / name) for name in CLIPS])
    fbank = np.stack([kaldi_fbank(w) for w in waves])
    captured = {}
    model.head.register_forward_hook(lambda module, inputs, output: captured.update(embedding=inputs[0]))
    with torch.no_grad():
        logits = model(torch.from_numpy(fbank).unsqueeze(1))  # imgs (B, 1, T, F), as inference.py
    embedding = captured["embedding"]
    arrays = {"wave": waves, "fbank": fbank, "embedding": embedding.numpy(), "logits": logits.numpy()}

    state = model.state_dict()
    ckpt_path = HERE / f"{STEM}.pt"
    torch.save({"args": None, "cfg": checkpoint_cfg(cfg), "model": state}, ckpt_path)
    np.savez_compressed(HERE / f"{STEM}-golden.npz", **arrays)
    import omegaconf
    import timm

    info = {
        "reference": {"repository": "github.com/cwx-worst-one/EAT", "commit": commit,
                      "files": list(REFERENCE_FILES), "patches": [list(p) for p in PATCHES],
                      "stubs": sorted(STUBS)},
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
                     "timm": timm.__version__ if hasattr(timm, "__version__") else importlib.metadata.version("timm"),
                     "omegaconf": omegaconf.__version__},
        "seed": SEED, "clips": list(CLIPS), "sample_rate": SAMPLE_RATE, "wave_samples": WAVE_SAMPLES,
        "config": {**TINY, "target_length": TARGET_LENGTH, "max_length": MAX_LENGTH, "patch_size": 16,
                   "norm_eps": 1e-6, "layer_norm_first": False, "prediction_mode": "CLS_TOKEN",
                   "use_fc_norm": True, "norm_mean": NORM_MEAN, "norm_std": NORM_STD},
        "shapes": {key: list(value.shape) for key, value in arrays.items()},
        "checkpoint_keys": {key: list(value.shape) for key, value in state.items()},
        "sha256": {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
                   for path in (ckpt_path, HERE / f"{STEM}-golden.npz")},
    }  # fmt: skip
    (HERE / f"{STEM}-golden.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps({k: info[k] for k in ("shapes", "config")}, indent=1))
    print("max |logit|", float(np.abs(arrays["logits"]).max()), "keys", len(state))


if __name__ == "__main__":
    main()
