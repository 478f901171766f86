"""How the corrupted run differs from the clean one.

Every corruption becomes token ids plus an additive change to the token embeddings, so the engine runs
all of them the same way: symmetric token replacement (``"str"``) swaps tokens; Gaussian noise
(``"gn"``) adds noise to the embeddings of the key tokens; a user callable rewrites the embeddings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .choices import CORRUPTIONS
from .errors import RemoteUnsupportedError, SettingsError, did_you_mean
from .pairs import TokenizedPairs

if TYPE_CHECKING:  # torch loads when a corruption is applied, not when its names are read (a cached result's)
    import torch

    from .models import PatchableModel

EmbeddingCorruption = Callable[["torch.Tensor", TokenizedPairs], "torch.Tensor"]
Corruption = str | EmbeddingCorruption
DEFAULT_NOISE_SCALE = 3.0


@dataclass(frozen=True)
class RunInput:
    """What one run feeds the model: token ids and an optional change to their embeddings."""

    ids: torch.Tensor  # [n, seq]
    embed_delta: torch.Tensor | None  # [n, seq, d_model]


def token_embeddings(model: PatchableModel, ids: torch.Tensor) -> torch.Tensor:
    """The token embeddings of ``ids``, read in a trace that stops after the embedding (where the weights are)."""
    import nnsight
    import torch

    with torch.no_grad(), model.trace({"input_ids": ids.to(model.device)}) as tracer:
        embeddings = nnsight.save(model.envoy(model.adapter.embed).output)
        tracer.stop()
    return embeddings.float()


def _prompt_noise(seed: int, tokens: torch.Tensor, d_model: int) -> torch.Tensor:
    """Noise for one prompt, seeded by the seed and the prompt's own tokens, not its place in a batch."""
    import torch

    digest = hashlib.sha256(str(seed).encode() + tokens.numpy().tobytes()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
    return torch.randn(len(tokens), d_model, generator=generator)


def gaussian_noise(
    model: PatchableModel, tokens: TokenizedPairs, *, seed: int, scale: float = DEFAULT_NOISE_SCALE
) -> torch.Tensor:
    """Embedding delta for GN: noise of std ``scale`` x the std of the dataset's token embeddings.

    The std is taken over every embedding entry of the real (unpadded) tokens of the clean prompts,
    as Meng et al. (2022) and Zhang & Nanda (2024) do.
    """
    import torch

    positions = tokens.require_corrupt_positions()
    embeddings = token_embeddings(model, tokens.clean_ids)
    real = tokens.attention_mask.bool().to(embeddings.device)
    std = embeddings[real].std(unbiased=False).item()
    delta = torch.zeros_like(embeddings, device="cpu")
    for i, rows in enumerate(positions):
        noise = _prompt_noise(seed, tokens.clean_ids[i, : tokens.lengths[i]], embeddings.shape[-1])
        delta[i, rows] = scale * std * noise[rows]
    return delta


def check_corruption(model: PatchableModel, tokens: TokenizedPairs, corruption: Corruption, noise_scale: float) -> None:
    """Refuse a corruption that cannot run on these pairs (or on a remote model) before anything runs."""
    if callable(corruption):
        if model.remote is not None:
            raise RemoteUnsupportedError(
                "A corruption callable rewrites the clean token embeddings on this machine, and this model's "
                "weights are remote: use corruption='str' or 'gn' (which run on the server), or load the model "
                "locally."
            )
        return
    if corruption == "str":
        tokens.require_corrupted()
    elif corruption == "gn":
        if not noise_scale > 0:
            raise SettingsError(f"noise_scale={noise_scale!r} must be positive (the paper uses 3).")
        tokens.require_corrupt_positions()
    else:
        raise SettingsError(
            f"Unknown corruption {corruption!r}.{did_you_mean(str(corruption), CORRUPTIONS)} Use 'str' (symmetric token "
            "replacement, recommended), 'gn' (Gaussian noise on the key tokens' embeddings), or a callable."
        )


def corrupted_input(
    model: PatchableModel,
    tokens: TokenizedPairs,
    corruption: Corruption,
    *,
    seed: int,
    noise_scale: float = DEFAULT_NOISE_SCALE,
) -> RunInput:
    """The corrupted run's input (where the model's weights are: GN scales its noise by the embeddings)."""
    import torch

    check_corruption(model, tokens, corruption, noise_scale)
    if callable(corruption):
        clean = token_embeddings(model, tokens.clean_ids)
        corrupted = corruption(clean.clone(), tokens)
        if not isinstance(corrupted, torch.Tensor) or corrupted.shape != clean.shape:
            raise SettingsError(
                "A corruption callable takes the clean token embeddings [n, seq, d_model] and the "
                f"TokenizedPairs, and returns corrupted embeddings of the same shape {tuple(clean.shape)}; "
                f"it returned {getattr(corrupted, 'shape', type(corrupted).__name__)}."
            )
        return RunInput(tokens.clean_ids, (corrupted.float() - clean).cpu())
    if corruption == "str":
        return RunInput(tokens.require_corrupted(), None)
    return RunInput(tokens.clean_ids, gaussian_noise(model, tokens, seed=seed, scale=noise_scale))


def corruption_name(corruption: Corruption) -> str:
    return corruption if isinstance(corruption, str) else getattr(corruption, "__name__", "custom")
