"""Convert llama2.c legacy checkpoints (Karpathy's tinyllamas) into a transformers Llama model and tokenizer.

The hub is often unreachable, and the small real models that can be kept offline are llama2.c files.
Converting them to ``LlamaForCausalLM`` + ``PreTrainedTokenizerFast`` lets every claim run on a real
pretrained model through exactly the same code path as a hub model.

Format (llama2.c "legacy", version 0): seven little-endian int32 (dim, hidden_dim, n_layers, n_heads,
n_kv_heads, vocab_size, seq_len), then float32 arrays.  A negative vocab_size means the classifier is
not tied to the token embedding and is stored after the (ignored) RoPE frequency tables.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, normalizers
from tokenizers.models import BPE
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from .errors import ModelLoadError

__all__ = ["convert_llama2c", "is_llama2c_checkpoint"]

_HEADER = struct.Struct("<7i")
_FLOAT32 = np.dtype("<f4")
_VERSIONED_MAGIC = 0x616B3432  # "ak42": llama2.c's newer (version >= 1) export format
_NORM_EPS = 1e-5  # llama2.c's rmsnorm adds 1e-5 to the mean square
_ROPE_THETA = 10000.0
_SPECIAL_PIECES = ("<unk>", "<s>", "</s>")  # llama2.c stores these as "<unk>", "\n<s>\n", "\n</s>\n"
_UNK_ID, _BOS_ID, _EOS_ID = 0, 1, 2
_N_BYTE_TOKENS = 256  # ids 3..258 are <0x00>..<0xFF>, which byte fallback relies on
_SPACE = "\u2581"  # SentencePiece's visible space

# Generous bounds: far above any llama2.c model, far below what garbage bytes usually decode to.
_MAX_DIM = 1 << 16
_MAX_HIDDEN_DIM = 1 << 18
_MAX_LAYERS = 1024
_MAX_VOCAB = 1 << 20
_MAX_SEQ_LEN = 1 << 20


@dataclass(frozen=True)
class _Header:
    """The seven header ints, with the sign of vocab_size turned into ``tied_classifier``."""

    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    tied_classifier: bool

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_size

    def array_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """The float32 arrays after the header, in file order (freq_cis included, to be skipped)."""
        layers, dim, hidden, kv_dim = self.n_layers, self.dim, self.hidden_dim, self.kv_dim
        shapes = [
            ("tok_embeddings", (self.vocab_size, dim)),
            ("rms_att", (layers, dim)),
            ("wq", (layers, dim, dim)),
            ("wk", (layers, kv_dim, dim)),
            ("wv", (layers, kv_dim, dim)),
            ("wo", (layers, dim, dim)),
            ("rms_ffn", (layers, dim)),
            ("w1", (layers, hidden, dim)),
            ("w2", (layers, dim, hidden)),
            ("w3", (layers, hidden, dim)),
            ("rms_final", (dim,)),
            ("freq_cis_real", (self.seq_len, self.head_size // 2)),
            ("freq_cis_imag", (self.seq_len, self.head_size // 2)),
        ]
        if not self.tied_classifier:
            shapes.append(("wcls", (self.vocab_size, dim)))
        return shapes

    def file_size(self) -> int:
        """The exact size in bytes of a checkpoint with this header."""
        n_floats = sum(int(np.prod(shape)) for _, shape in self.array_shapes())
        return _HEADER.size + n_floats * _FLOAT32.itemsize


def _header_problem(values: tuple[int, ...]) -> str | None:
    """Why these seven ints are not a llama2.c header, or None when they are plausible."""
    dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len = values
    if dim == _VERSIONED_MAGIC:
        return (
            "it is a newer llama2.c export (magic 'ak42'); only the legacy format "
            "(export.py --version 0) is supported"
        )
    bounds = {
        "dim": (dim, _MAX_DIM),
        "hidden_dim": (hidden_dim, _MAX_HIDDEN_DIM),
        "n_layers": (n_layers, _MAX_LAYERS),
        "n_heads": (n_heads, dim),
        "n_kv_heads": (n_kv_heads, n_heads),
        "|vocab_size|": (abs(vocab_size), _MAX_VOCAB),
        "seq_len": (seq_len, _MAX_SEQ_LEN),
    }
    for name, (value, upper) in bounds.items():
        if not 0 < value <= upper:
            return f"{name}={value} is outside 1..{upper}"
    if dim % n_heads:
        return f"dim={dim} is not a multiple of n_heads={n_heads}"
    if n_heads % n_kv_heads:
        return f"n_heads={n_heads} is not a multiple of n_kv_heads={n_kv_heads}"
    if (dim // n_heads) % 2:
        return f"the head size {dim // n_heads} is odd, so RoPE cannot rotate pairs"
    return None


def _read_header_values(path: Path) -> tuple[int, ...] | None:
    """The first seven int32 of ``path``, or None when the file is shorter than a header."""
    with path.open("rb") as handle:
        raw = handle.read(_HEADER.size)
    return _HEADER.unpack(raw) if len(raw) == _HEADER.size else None


def _has_plausible_header(path: Path) -> bool:
    try:
        values = _read_header_values(path)
    except OSError:
        return False
    return values is not None and _header_problem(values) is None


def _is_tokenizer_name(path: Path) -> bool:
    return path.name.startswith("tok")


def _checkpoints_in(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.glob("*.bin")) if not _is_tokenizer_name(p) and _has_plausible_header(p)]


def is_llama2c_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like something :func:`convert_llama2c` can load, so loaders can route to it.

    True for a ``.bin`` file whose header is a plausible llama2.c header (the file size is only checked
    on conversion, so a truncated checkpoint still reaches the helpful error there), or for a folder
    holding exactly one such checkpoint plus exactly one ``tok*.bin`` tokenizer.
    """
    path = Path(path)
    if path.is_file():
        return path.suffix == ".bin" and _has_plausible_header(path)
    if path.is_dir():
        return len(_checkpoints_in(path)) == 1 and len(sorted(path.glob("tok*.bin"))) == 1
    return False


def _resolve_checkpoint(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.exists():
        raise ModelLoadError(
            f"llama2.c checkpoint {path} does not exist. Pass the path of the checkpoint .bin file "
            "(e.g. stories260K.bin) or of the folder that holds it."
        )
    found = _checkpoints_in(path)
    if len(found) != 1:
        problem = "no llama2.c checkpoint" if not found else f"{len(found)} llama2.c checkpoints"
        names = f" ({', '.join(p.name for p in found)})" if found else ""
        raise ModelLoadError(
            f"Folder {path} holds {problem}{names}: a .bin with a llama2.c header, not named tok*. "
            "Pass the path of the checkpoint .bin file itself."
        )
    return found[0]


def _resolve_tokenizer(checkpoint: Path, tokenizer: str | os.PathLike | None) -> Path:
    if tokenizer is not None:
        path = Path(tokenizer)
        if not path.is_file():
            raise ModelLoadError(
                f"llama2.c tokenizer file {path} does not exist. Pass the tok*.bin file exported with the "
                "checkpoint (e.g. tok512.bin for stories260K, tokenizer.bin for the 32000-token models)."
            )
        return path
    found = sorted(checkpoint.parent.glob("tok*.bin"))
    if len(found) != 1:
        problem = f"{len(found) or 'no'} tokenizer file{'' if len(found) == 1 else 's'} (tok*.bin)"
        raise ModelLoadError(
            f"Found {problem} next to llama2.c checkpoint {checkpoint}. Put the tokenizer exported with it "
            "(e.g. tok512.bin for stories260K, tokenizer.bin for the 32000-token models) in that folder, "
            "or pass tokenizer=<path to the .bin>."
        )
    return found[0]


def _read_header(path: Path) -> _Header:
    values = _read_header_values(path)
    if values is None:
        raise ModelLoadError(
            f"{path} is shorter than a llama2.c header ({_HEADER.size} bytes); the file is truncated or "
            "not a llama2.c checkpoint. Download or export it again."
        )
    problem = _header_problem(values)
    if problem is not None:
        raise ModelLoadError(
            f"{path} does not have a plausible llama2.c header {values}: {problem}. Pass a llama2.c "
            "legacy checkpoint (e.g. stories260K.bin); if it is one, the file is corrupt: download it again."
        )
    dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len = values
    return _Header(dim, hidden_dim, n_layers, n_heads, n_kv_heads, abs(vocab_size), seq_len, vocab_size > 0)


def _read_arrays(path: Path, header: _Header) -> dict[str, torch.Tensor]:
    """The named float32 arrays of the checkpoint, after checking the file holds exactly them."""
    expected, actual = header.file_size(), path.stat().st_size
    if actual != expected:
        raise ModelLoadError(
            f"{path} is {actual} bytes but its llama2.c header {header} implies {expected} bytes; the file "
            f"is {'truncated' if actual < expected else 'longer than expected (corrupt or another format)'}. "
            "Download or export the checkpoint again."
        )
    floats = np.fromfile(path, dtype=_FLOAT32, offset=_HEADER.size)
    flat = torch.from_numpy(floats.astype(np.float32, copy=False))  # native byte order for torch
    arrays: dict[str, torch.Tensor] = {}
    start = 0
    for name, shape in header.array_shapes():
        size = int(np.prod(shape))
        arrays[name] = flat[start : start + size].reshape(shape)
        start += size
    return arrays


def _rope_rows_to_half_split(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder each head's output rows from llama2.c's RoPE layout to transformers' layout.

    llama2.c rotates adjacent rows (2i, 2i+1) of a head by frequency i; transformers rotates row i with
    row i + head_size/2.  Putting a head's rows in the order [0, 2, 4, ..., 1, 3, 5, ...] makes the same
    pairs rotate by the same angles, and since q and k are permuted alike, attention scores are unchanged.
    """
    out_features, in_features = weight.shape
    per_head = weight.reshape(n_heads, out_features // n_heads // 2, 2, in_features)
    return per_head.transpose(1, 2).reshape(out_features, in_features)


def _state_dict(header: _Header, arrays: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = {
        "model.embed_tokens.weight": arrays["tok_embeddings"],
        "model.norm.weight": arrays["rms_final"],
        "lm_head.weight": arrays["tok_embeddings"] if header.tied_classifier else arrays["wcls"],
    }
    for layer in range(header.n_layers):
        prefix = f"model.layers.{layer}."
        wq = _rope_rows_to_half_split(arrays["wq"][layer], header.n_heads)
        wk = _rope_rows_to_half_split(arrays["wk"][layer], header.n_kv_heads)
        state.update(
            {
                prefix + "input_layernorm.weight": arrays["rms_att"][layer],
                prefix + "self_attn.q_proj.weight": wq,
                prefix + "self_attn.k_proj.weight": wk,
                prefix + "self_attn.v_proj.weight": arrays["wv"][layer],
                prefix + "self_attn.o_proj.weight": arrays["wo"][layer],
                prefix + "post_attention_layernorm.weight": arrays["rms_ffn"][layer],
                # llama2.c's FFN is w2(silu(w1 x) * w3 x).
                prefix + "mlp.gate_proj.weight": arrays["w1"][layer],
                prefix + "mlp.up_proj.weight": arrays["w3"][layer],
                prefix + "mlp.down_proj.weight": arrays["w2"][layer],
            }
        )
    return state


def _build_model(path: Path) -> tuple[LlamaForCausalLM, _Header]:
    header = _read_header(path)
    arrays = _read_arrays(path, header)
    config = LlamaConfig(
        vocab_size=header.vocab_size,
        hidden_size=header.dim,
        intermediate_size=header.hidden_dim,
        num_hidden_layers=header.n_layers,
        num_attention_heads=header.n_heads,
        num_key_value_heads=header.n_kv_heads,
        head_dim=header.head_size,
        hidden_act="silu",
        max_position_embeddings=header.seq_len,
        rms_norm_eps=_NORM_EPS,
        rope_parameters={"rope_type": "default", "rope_theta": _ROPE_THETA},
        tie_word_embeddings=header.tied_classifier,
        bos_token_id=_BOS_ID,
        eos_token_id=_EOS_ID,
        pad_token_id=_EOS_ID,
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.load_state_dict(_state_dict(header, arrays), strict=True)
    model.config.name_or_path = str(path)
    return model.eval(), header


def _split_records(data: bytes) -> list[tuple[bytes, float]] | None:
    """The (piece bytes, score) records after the int32 max_token_length; None unless they tile the file."""
    record = struct.Struct("<fi")
    records: list[tuple[bytes, float]] = []
    offset = 4
    while offset + record.size <= len(data):
        score, length = record.unpack_from(data, offset)
        start, offset = offset + record.size, offset + record.size + length
        if length < 0 or offset > len(data):
            return None
        records.append((data[start:offset], score))
    return records if offset == len(data) else None


def _read_pieces(path: Path, vocab_size: int) -> list[tuple[str, float]]:
    """(piece, score) for every id of a llama2.c tokenizer file, with spaces as SentencePiece's '▁'."""
    records = _split_records(path.read_bytes())
    try:
        pieces = [(raw.decode("utf-8").replace(" ", _SPACE), score) for raw, score in records or []]
    except UnicodeDecodeError:
        pieces = []
    if len(pieces) != vocab_size:
        raise ModelLoadError(
            f"llama2.c tokenizer {path} does not hold exactly {vocab_size} well-formed pieces (the "
            "checkpoint's vocab_size); it is truncated, corrupt or belongs to another model. Pass the "
            "tok*.bin that was exported with the checkpoint (e.g. tok512.bin for stories260K)."
        )
    byte_pieces = [piece for piece, _ in pieces[len(_SPECIAL_PIECES) : len(_SPECIAL_PIECES) + _N_BYTE_TOKENS]]
    if byte_pieces != [f"<0x{b:02X}>" for b in range(_N_BYTE_TOKENS)]:
        raise ModelLoadError(
            f"llama2.c tokenizer {path} does not have the byte tokens <0x00>..<0xFF> at ids 3-258, so byte "
            "fallback cannot work. Pass a SentencePiece-exported llama2.c tokenizer (e.g. tok512.bin)."
        )
    return [(special, 0.0) for special in _SPECIAL_PIECES] + pieces[len(_SPECIAL_PIECES) :]


def _bpe_merges(pieces: list[tuple[str, float]]) -> list[tuple[str, str]]:
    """Every way to build a mergeable piece from two pieces, best merged-piece score first.

    SentencePiece BPE (and llama2.c's ``encode``) repeatedly merges the adjacent pair whose merged piece
    scores highest; a ``tokenizers`` BPE applies the lowest-ranked merge first, so ranking merges by
    descending score of the merged piece reproduces it.
    """
    first_mergeable = len(_SPECIAL_PIECES) + _N_BYTE_TOKENS
    mergeable = {piece for piece, _ in pieces[first_mergeable:]}
    ranked = sorted(range(first_mergeable, len(pieces)), key=lambda i: (-pieces[i][1], i))
    return [
        (piece[:cut], piece[cut:])
        for piece in (pieces[i][0] for i in ranked)
        for cut in range(1, len(piece))
        if piece[:cut] in mergeable and piece[cut:] in mergeable
    ]


def _build_tokenizer(path: Path, header: _Header) -> PreTrainedTokenizerFast:
    pieces = _read_pieces(path, header.vocab_size)
    vocab = {piece: i for i, (piece, _) in enumerate(pieces)}
    if len(vocab) != len(pieces):
        raise ModelLoadError(
            f"llama2.c tokenizer {path} repeats a piece, so ids would be ambiguous; the file is corrupt. "
            "Export or download the tokenizer again."
        )
    backend = Tokenizer(
        BPE(vocab=vocab, merges=_bpe_merges(pieces), unk_token=_SPECIAL_PIECES[_UNK_ID], byte_fallback=True)
    )
    # SentencePiece's add_dummy_prefix: always a '▁' before non-empty text (even one starting with a
    # space, unlike Metaspace), spaces written as '▁', and no pre-splitting, exactly like llama2.c.
    backend.normalizer = normalizers.Sequence([normalizers.Prepend(_SPACE), normalizers.Replace(" ", _SPACE)])
    backend.decoder = decoders.Sequence(
        [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=_SPECIAL_PIECES[_UNK_ID],
        bos_token=_SPECIAL_PIECES[_BOS_ID],
        eos_token=_SPECIAL_PIECES[_EOS_ID],
        pad_token=_SPECIAL_PIECES[_EOS_ID],
        add_bos_token=True,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
        model_max_length=header.seq_len,
        name_or_path=str(path),
    )


def convert_llama2c(
    checkpoint: str | os.PathLike, tokenizer: str | os.PathLike | None = None
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Load a llama2.c legacy checkpoint as an eval-mode float32 ``LlamaForCausalLM`` and its tokenizer.

    ``checkpoint`` is the ``.bin`` file or a folder holding it; ``tokenizer`` defaults to the single
    ``tok*.bin`` next to the checkpoint.  The tokenizer encodes as llama2.c does: BOS first, a dummy
    '▁' prefix, BPE merges by piece score and byte fallback.  llama2.c has no pad token, so ``</s>``
    (id 2) doubles as ``pad_token``; mask padding with the attention mask, not by id.
    Raises ``ModelLoadError`` for missing, truncated or implausible files.
    """
    checkpoint_path = _resolve_checkpoint(Path(checkpoint))
    tokenizer_path = _resolve_tokenizer(checkpoint_path, tokenizer)
    model, header = _build_model(checkpoint_path)
    return model, _build_tokenizer(tokenizer_path, header)
