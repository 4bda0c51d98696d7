"""A bundle's text tower (CLAP): strings -> token ids (the `tokenizers` library) -> unit-norm embeddings.

No transformers and no PyTorch: the bundle carries `tokenizer.json` and `text.onnx`
(bundle.TextTower). Token ids are cut at the manifest's max_tokens, right-padded with its pad_id
to the longest in the batch (mask 0 there); the graph gives every row the embedding it has alone.
`run` blocks (the text batcher calls it from its worker thread).
"""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime
from tokenizers import Tokenizer

from earshot.bundle import ATTENTION_MASK_INPUT, INPUT_IDS_INPUT, TEXT_EMBEDDING_OUTPUT, Bundle
from earshot.engine.runner import PROVIDERS, RunnerConfig, session_options

log = logging.getLogger(__name__)


class TextEncoder:
    def __init__(self, bundle: Bundle, config: RunnerConfig) -> None:
        text = bundle.manifest.text
        if text is None or bundle.text_model_path is None or bundle.tokenizer_path is None:
            raise ValueError(f"bundle {bundle.name} has no text tower")
        self.bundle = bundle
        self.spec = text
        self.tokenizer = Tokenizer.from_file(str(bundle.tokenizer_path))
        self.tokenizer.no_padding()  # padding is the batch's, made in run()
        self.tokenizer.enable_truncation(text.max_tokens)
        # the token axis varies batch to batch: CUDA where asked for and present (TensorRT would
        # build an engine per shape), else the CPU
        available = set(onnxruntime.get_available_providers())
        providers = [PROVIDERS["cuda"]] if "cuda" in config.providers and PROVIDERS["cuda"] in available else []
        providers.append(PROVIDERS["cpu"])
        self.session = onnxruntime.InferenceSession(
            str(bundle.text_model_path), sess_options=session_options(config), providers=providers
        )
        self.providers: list[str] = self.session.get_providers()
        log.info("model %s: text tower on %s", bundle.name, ", ".join(self.providers))

    @property
    def embedding_dim(self) -> int:
        return self.bundle.manifest.embedding_dim

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, special tokens included, at most max_tokens each."""
        return [encoding.ids for encoding in self.tokenizer.encode_batch(texts)]

    def run(self, token_ids: list[list[int]]) -> np.ndarray:
        """Token id lists -> (n, embedding_dim) float32, unit norm."""
        longest = max(len(ids) for ids in token_ids)
        input_ids = np.full((len(token_ids), longest), self.spec.pad_id, dtype=np.int64)  # (n, T)
        attention_mask = np.zeros((len(token_ids), longest), dtype=np.int64)  # (n, T)
        for row, ids in enumerate(token_ids):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        feeds = {INPUT_IDS_INPUT: input_ids, ATTENTION_MASK_INPUT: attention_mask}
        (embedding,) = self.session.run([TEXT_EMBEDDING_OUTPUT], feeds)
        return np.asarray(embedding, dtype=np.float32)  # (n, P)

    def warm_up(self) -> None:
        self.run(self.tokenize(["warm up"]))

    def self_test(self) -> None:
        """The bundle's text probe: the same token ids as at export, embeddings within its cosine.
        Raises TextSelfTestFailed (the model is not served) when either differs."""
        if self.spec.probe_file is None:
            log.warning("model %s: its text tower has no probe (a bundle made before they existed)", self.bundle.name)
            return
        with np.load(self.bundle.path / self.spec.probe_file) as probe:
            texts = [str(t) for t in probe["texts"]]
            expected_ids = [row[mask.astype(bool)].tolist() for row, mask in zip(probe["input_ids"], probe["attention_mask"], strict=True)]
            expected = probe["embedding"]
        got_ids = self.tokenize(texts)
        if got_ids != expected_ids:
            first = next(i for i, (a, b) in enumerate(zip(got_ids, expected_ids, strict=True)) if a != b)
            raise TextSelfTestFailed(
                f"model {self.bundle.name}: the tokenizer gives other ids than at export for {texts[first]!r} "
                f"({got_ids[first][:8]}... vs {expected_ids[first][:8]}...): a tokenizers version that reads "
                "tokenizer.json differently?"
            )
        got = self.run(got_ids)
        cosine = (got * expected).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
        if float(cosine.min()) < self.spec.probe_min_cosine:
            raise TextSelfTestFailed(
                f"model {self.bundle.name}: text tower on {', '.join(self.providers)} gives cosine {float(cosine.min()):.6f} "
                f"to the export's embeddings (tolerance {self.spec.probe_min_cosine})"
            )
        log.info("model %s: text tower self-test passed (min cosine %.6f)", self.bundle.name, float(cosine.min()))


class TextSelfTestFailed(RuntimeError):
    """The text tower gives other answers here than where the bundle was made."""
