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
