"""``patch()``, the public front of the patching methods: it checks the method and hands the sweep to
exact patching (``exact.exact_patch``) or attribution patching (``attribution.attribution_patch``).
"""

from __future__ import annotations

from .attribution import attribution_patch
from .choices import METHODS
from .corruptions import DEFAULT_NOISE_SCALE, Corruption
from .engine import Pairs, Progress, check_choice
from .errors import SettingsError
from .exact import exact_patch
from .metrics import Metric
from .models import PatchableModel
from .results import PatchResult


def patch(
    model: PatchableModel,
    pairs: Pairs,
    component: str = "attn_head",
    corruption: Corruption = "str",
    metric: Metric = "logit_diff",
    *,
    positions: str | int = "all",
    window: int = 1,
    direction: str = "denoise",
    seed: int = 0,
    noise_scale: float = DEFAULT_NOISE_SCALE,
    batch_size: int | None = None,
    progress: Progress = None,
    method: str = "exact",
    grad_drop: bool = False,
) -> PatchResult:
    """Patch every component of one kind and measure how much behaviour each restores.

    ``component`` is ``"attn_head"``, ``"attn"``, ``"mlp"`` or ``"resid"`` (the residual stream before a
    layer). ``positions`` is ``"all"`` (all positions at once), ``"each"`` (one position at a time), a
    token index, or a named position (``"last"`` or a span name of the pairs). ``direction="denoise"``
    restores clean activations into the corrupted run (the paper's default); ``"noise"`` writes
    corrupted activations into the clean run. ``window=k`` restores ``k`` adjacent layers together
    (sliding-window patching). Every built-in metric (``logit_diff``, ``prob``, ``kl``, ``logprob``) comes from
    the same runs, and so does ``metric`` when it is a user metric (a registered name or a function, see
    ``interp_tests.metrics``): ``result.with_metric(...)``.
    ``progress=True`` shows a tqdm bar of patched runs; a callable ``progress(done, total)`` is called after each
    batched forward pass instead.

    Rows per forward pass follow ``batch_size`` (default: sized to the device's memory by ``batch_bytes``:
    on a GPU, half its free memory); when the device runs out of memory the pass is retried with half the
    rows, down to one, and ``settings["rows_per_pass"]`` records the size that fit. Batch size never changes the numbers beyond float rounding. On CPU the same
    inputs and ``seed`` give bit-identical results. The model runs in its own dtype but the metrics are
    computed in float32; see ``interp_tests.metrics`` for how far float16/bfloat16 sweeps move. The model's
    clean accuracy on the pairs is checked first: at chance, the sweep warns (``InterpWarning``).

    ``method="attribution"`` estimates every effect by attribution patching instead (two forward passes and
    one backward pass, for ``metric`` only; see ``interp_tests.attribution``); the result's ``is_estimate`` is
    true. ``grad_drop=True`` adds AtP*'s GradDrop to it (one more backward pass per layer).
    """
    check_choice("method", method, METHODS)
    if method == "attribution":
        return attribution_patch(
            model, pairs, component, corruption, metric, positions=positions, window=window, direction=direction,
            seed=seed, noise_scale=noise_scale, grad_drop=grad_drop, batch_size=batch_size, progress=progress,
        )
    if grad_drop:
        raise SettingsError("grad_drop=True is part of attribution patching: use it with method='attribution'.")
    return exact_patch(
        model, pairs, component, corruption, metric, positions=positions, window=window, direction=direction,
        seed=seed, noise_scale=noise_scale, batch_size=batch_size, progress=progress,
    )
