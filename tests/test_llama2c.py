"""The llama2.c converter must give a model and tokenizer that behave exactly like llama2.c itself.

Reference implementations of llama2.c's forward pass (RoPE on adjacent pairs, no row permutation) and
of its BPE ``encode`` live here, independent of the converter, so agreement proves the conversion.
Tests on the real stories260K weights skip when ../shared/models is absent (a fresh clone); the rest
use small synthetic checkpoints written into tmp_path and always run.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from interp_tests.errors import ModelLoadError
from interp_tests.llama2c import convert_llama2c, is_llama2c_checkpoint

STORIES = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "stories260K"
needs_stories = pytest.mark.skipif(
    not (STORIES / "stories260K.bin").is_file(),
    reason=f"real llama2.c weights not found at {STORIES} (only the shared dev/CI machines have them)",
)

Converted = tuple[LlamaForCausalLM, PreTrainedTokenizerFast]
HEADER = struct.Struct("<7i")
ARRAY_NAMES = ("tok_embeddings", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final")


# ----------------------------------------------------------------------------- llama2.c reference


def read_llama2c(path: Path) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """Header and weights of a legacy checkpoint, read straight from the bytes."""
    raw = path.read_bytes()
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = HEADER.unpack_from(raw)
    head_size = dim // heads
    kv_dim = kv_heads * head_size
    shapes = {
        "tok_embeddings": (abs(vocab), dim),
        "rms_att": (layers, dim),
        "wq": (layers, dim, dim),
        "wk": (layers, kv_dim, dim),
        "wv": (layers, kv_dim, dim),
        "wo": (layers, dim, dim),
        "rms_ffn": (layers, dim),
        "w1": (layers, hidden, dim),
        "w2": (layers, dim, hidden),
        "w3": (layers, hidden, dim),
        "rms_final": (dim,),
    }
    floats = np.frombuffer(raw, dtype="<f4", offset=HEADER.size)
    weights, start = {}, 0
    for name in ARRAY_NAMES:
        size = math.prod(shapes[name])
        weights[name] = torch.tensor(floats[start : start + size].reshape(shapes[name]))
        start += size
    start += seq_len * head_size  # freq_cis_real and freq_cis_imag, seq_len x head_size/2 each
    if vocab > 0:
        weights["wcls"] = weights["tok_embeddings"]
    else:
        weights["wcls"] = torch.tensor(floats[start : start + abs(vocab) * dim].reshape(abs(vocab), dim))
    return {"n_heads": heads, "n_kv_heads": kv_heads, "head_size": head_size}, weights


def rmsnorm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * weight


def rope_adjacent_pairs(x: torch.Tensor) -> torch.Tensor:
    """llama2.c's RoPE: rotate elements (2i, 2i+1) of each head by pos * 10000^(-2i/head_size)."""
    seq, heads, head_size = x.shape
    freqs = 10000.0 ** (-torch.arange(0, head_size, 2, dtype=torch.float64) / head_size)
    angles = torch.arange(seq, dtype=torch.float64)[:, None] * freqs  # [seq, head_size/2]
    cos, sin = angles.cos()[:, None, :], angles.sin()[:, None, :]
    real, imag = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1)
    return rotated.reshape(seq, heads, head_size)


def llama2c_logits(path: Path, tokens: list[int]) -> torch.Tensor:
    """Logits [seq, vocab] of llama2.c's forward pass (run.c), computed in float64."""
    hp, weights = read_llama2c(path)
    w = {name: t.double() for name, t in weights.items()}
    n_heads, n_kv_heads, head_size = hp["n_heads"], hp["n_kv_heads"], hp["head_size"]
    seq = len(tokens)
    causal = torch.full((seq, seq), float("-inf"), dtype=torch.float64).triu(1)
    x = w["tok_embeddings"][tokens]
    for layer in range(w["rms_att"].shape[0]):
        h = rmsnorm(x, w["rms_att"][layer])
        q = rope_adjacent_pairs((h @ w["wq"][layer].T).view(seq, n_heads, head_size))
        k = rope_adjacent_pairs((h @ w["wk"][layer].T).view(seq, n_kv_heads, head_size))
        v = (h @ w["wv"][layer].T).view(seq, n_kv_heads, head_size)
        group = n_heads // n_kv_heads  # query head i reads kv head i // group
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(head_size) + causal
        attended = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(seq, -1)
        x = x + attended @ w["wo"][layer].T
        h = rmsnorm(x, w["rms_ffn"][layer])
        gated = torch.nn.functional.silu(h @ w["w1"][layer].T) * (h @ w["w3"][layer].T)
        x = x + gated @ w["w2"][layer].T
    return rmsnorm(x, w["rms_final"]) @ w["wcls"].T


def read_vocab(path: Path) -> tuple[list[str], list[float]]:
    raw = path.read_bytes()
    pieces, scores, offset = [], [], 4
    while offset < len(raw):
        score, length = struct.unpack_from("<fi", raw, offset)
        pieces.append(raw[offset + 8 : offset + 8 + length].decode("utf-8"))
        scores.append(score)
        offset += 8 + length
    return pieces, scores


def llama2c_encode(text: str, pieces: list[str], scores: list[float]) -> list[int]:
    """run.c's encode(bos=1, eos=0): dummy ' ' prefix, codepoints with byte fallback, best-score merges."""
    ids = {piece: i for i, piece in enumerate(pieces)}
    tokens = [ids[" "]] if text else []
    for char in text:
        tokens.extend([ids[char]] if char in ids else [byte + 3 for byte in char.encode("utf-8")])
    while True:
        best_score, best_at = -math.inf, None
        for i in range(len(tokens) - 1):
            merged = ids.get(pieces[tokens[i]] + pieces[tokens[i + 1]])
            if merged is not None and scores[merged] > best_score:
                best_score, best_at = scores[merged], i
        if best_at is None:
            return [1, *tokens]
        tokens[best_at : best_at + 2] = [ids[pieces[tokens[best_at]] + pieces[tokens[best_at + 1]]]]


# ----------------------------------------------------------------------------- synthetic checkpoints

# Ids 259.. of the toy vocabulary, best score first, after <unk>, <s>, </s> and the 256 byte tokens.
# "ab" outscores " a", so merging in the wrong order changes how " ab" is split.
TOY_PIECES = [" ", "a", "b", "ab", " a", "aab"]


def write_checkpoint(path: Path, *, tied: bool, dim: int = 16, n_heads: int = 4, n_kv_heads: int = 2) -> None:
    """A random llama2.c legacy checkpoint with the toy vocabulary (tied or untied classifier)."""
    rng = np.random.default_rng(0)
    hidden, layers, seq_len = 24, 2, 32
    vocab = 3 + 256 + len(TOY_PIECES)
    kv_dim = n_kv_heads * dim // n_heads
    shapes = [
        (vocab, dim),  # tok_embeddings
        (layers, dim),  # rms_att
        (layers, dim, dim),  # wq
        (layers, kv_dim, dim),  # wk
        (layers, kv_dim, dim),  # wv
        (layers, dim, dim),  # wo
        (layers, dim),  # rms_ffn
        (layers, hidden, dim),  # w1
        (layers, dim, hidden),  # w2
        (layers, hidden, dim),  # w3
        (dim,),  # rms_final
        (seq_len, dim // n_heads),  # freq_cis_real + freq_cis_imag: random here, so they must be skipped
    ]
    if not tied:
        shapes.append((vocab, dim))
    arrays = [rng.normal(0.0, 0.5, shape).astype("<f4") for shape in shapes]
    header = HEADER.pack(dim, hidden, layers, n_heads, n_kv_heads, vocab if tied else -vocab, seq_len)
    path.write_bytes(header + b"".join(a.tobytes() for a in arrays))


def write_tokenizer(path: Path) -> None:
    pieces = ["<unk>", "\n<s>\n", "\n</s>\n", *(f"<0x{b:02X}>" for b in range(256)), *TOY_PIECES]
    scores = [0.0] * 259 + [-float(i) for i in range(len(TOY_PIECES))]
    body = b"".join(struct.pack("<fi", s, len(p.encode())) + p.encode() for p, s in zip(pieces, scores))
    path.write_bytes(struct.pack("<i", 3) + body)


@pytest.fixture
def toy_dir(tmp_path: Path) -> Path:
    write_checkpoint(tmp_path / "toy.bin", tied=False)
    write_tokenizer(tmp_path / "tok265.bin")
    return tmp_path


# ----------------------------------------------------------------------------- real weights


@pytest.fixture(scope="module")
def stories() -> Converted:
    return convert_llama2c(STORIES)


@needs_stories
def test_greedy_decoding_from_bos_tells_the_lily_story(stories: Converted) -> None:
    model, tokenizer = stories
    assert not model.training and model.dtype == torch.float32
    assert model.lm_head.weight is model.model.embed_tokens.weight  # positive vocab_size: tied classifier
    with torch.no_grad():
        out = model.generate(torch.tensor([[tokenizer.bos_token_id]]), do_sample=False, max_new_tokens=40)
    text = tokenizer.decode(out[0], skip_special_tokens=True)
    assert text.startswith(
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."
    )


@needs_stories
@pytest.mark.parametrize(
    "text",
    [
        "Once upon a time, there was a little girl named Lily.",
        'She said, "Let\'s go!" (3 cats & 12 dogs; 100%?)',
        " leading space,  double  spaces\nand a newline\t",
        "Café déjà vu: ☃ and 日本",
        "x",
    ],
)
def test_tokenizer_encodes_like_llama2c_and_round_trips(stories: Converted, text: str) -> None:
    _, tokenizer = stories
    pieces, scores = read_vocab(STORIES / "tok512.bin")
    ids = tokenizer(text).input_ids
    assert ids == llama2c_encode(text, pieces, scores)
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


@needs_stories
def test_tokenizer_special_tokens(stories: Converted) -> None:
    _, tokenizer = stories
    assert tokenizer("Once upon").input_ids[0] == 1
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.pad_token_id == 2
    assert tokenizer("").input_ids == [1]


@needs_stories
def test_logits_match_a_llama2c_forward_pass(stories: Converted) -> None:
    model, tokenizer = stories
    tokens = tokenizer("Once upon a time, there was a little").input_ids
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[0]
    expected = llama2c_logits(STORIES / "stories260K.bin", tokens)
    torch.testing.assert_close(logits.double(), expected, atol=1e-4, rtol=0)


@needs_stories
def test_shared_folder_is_recognised() -> None:
    assert is_llama2c_checkpoint(STORIES)
    assert is_llama2c_checkpoint(STORIES / "stories260K.bin")
    assert not is_llama2c_checkpoint(STORIES / "tok512.bin")


# ----------------------------------------------------------------------------- synthetic weights, always run


@pytest.mark.parametrize("tied", [True, False])
def test_synthetic_checkpoint_logits_match_llama2c(tmp_path: Path, tied: bool) -> None:
    write_checkpoint(tmp_path / "toy.bin", tied=tied)
    write_tokenizer(tmp_path / "tok265.bin")
    model, _ = convert_llama2c(tmp_path / "toy.bin")
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    tokens = [1, 259, 262, 100, 263, 5, 264, 261]
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[0]
    expected = llama2c_logits(tmp_path / "toy.bin", tokens)
    torch.testing.assert_close(logits.double(), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("text", ["ab ab", "a b", "aab", "b a é"])
def test_synthetic_tokenizer_merges_by_score(toy_dir: Path, text: str) -> None:
    _, tokenizer = convert_llama2c(toy_dir)
    pieces, scores = read_vocab(toy_dir / "tok265.bin")
    assert tokenizer(text).input_ids == llama2c_encode(text, pieces, scores)
    assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == text


def test_is_llama2c_checkpoint(toy_dir: Path) -> None:
    assert is_llama2c_checkpoint(toy_dir)
    assert is_llama2c_checkpoint(toy_dir / "toy.bin")
    assert not is_llama2c_checkpoint(toy_dir / "tok265.bin")
    assert not is_llama2c_checkpoint(toy_dir / "missing.bin")
    (toy_dir / "tok265.bin").unlink()
    assert not is_llama2c_checkpoint(toy_dir)  # a checkpoint without its tokenizer
    (toy_dir / "zip.bin").write_bytes(b"PK\x03\x04" + bytes(100))  # e.g. a torch pytorch_model.bin
    assert not is_llama2c_checkpoint(toy_dir / "zip.bin")


def test_missing_checkpoint_is_a_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"does not exist.*Pass the path of the checkpoint"):
        convert_llama2c(tmp_path / "stories260K.bin")
    with pytest.raises(ModelLoadError, match=r"holds no llama2.c checkpoint"):
        convert_llama2c(tmp_path)


def test_truncated_checkpoint_is_a_model_load_error(toy_dir: Path) -> None:
    data = (toy_dir / "toy.bin").read_bytes()
    (toy_dir / "toy.bin").write_bytes(data[:-100])
    with pytest.raises(ModelLoadError, match=r"implies \d+ bytes; the file is truncated.*again"):
        convert_llama2c(toy_dir / "toy.bin")
    (toy_dir / "toy.bin").write_bytes(data[:10])
    with pytest.raises(ModelLoadError, match=r"shorter than a llama2.c header"):
        convert_llama2c(toy_dir / "toy.bin")


def test_implausible_header_is_a_model_load_error(tmp_path: Path) -> None:
    write_tokenizer(tmp_path / "tok265.bin")
    write_checkpoint(tmp_path / "odd.bin", tied=True, n_heads=3, n_kv_heads=3)
    with pytest.raises(ModelLoadError, match=r"dim=16 is not a multiple of n_heads=3"):
        convert_llama2c(tmp_path / "odd.bin")
    (tmp_path / "garbage.bin").write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(ModelLoadError, match=r"does not have a plausible llama2.c header"):
        convert_llama2c(tmp_path / "garbage.bin")


def test_missing_or_corrupt_tokenizer_is_a_model_load_error(toy_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"tokenizer file .*nope.bin does not exist"):
        convert_llama2c(toy_dir, tokenizer=toy_dir / "nope.bin")
    data = (toy_dir / "tok265.bin").read_bytes()
    (toy_dir / "tok265.bin").write_bytes(data[:-3])
    with pytest.raises(ModelLoadError, match=r"does not hold exactly 265 well-formed pieces"):
        convert_llama2c(toy_dir)
    (toy_dir / "tok265.bin").unlink()
    with pytest.raises(ModelLoadError, match=r"no tokenizer files \(tok\*\.bin\).*pass tokenizer="):
        convert_llama2c(toy_dir / "toy.bin")
