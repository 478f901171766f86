"""What the organism's circuits show, measured with the library: the findings tables and the circuit figure
of MODEL_CARD.md and the README.

    python -m interp_tests.organism.findings                     # every table, on the shipped organism
    python -m interp_tests.organism.findings --only ioi          # one section: sweeps, ioi, window, gn
    python -m interp_tests.organism.findings --figure docs/organism_ioi_circuit.png

Held-out prompts (``split="test"``), ``n=64, seed=0`` unless a section says otherwise; detection at 2 SD from
the mean over all heads. Every number the claims in ``hypotheses/organism/`` assert is printed here.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import tasks
from ..attention import attention_to
from ..circuit_patching import circuit_patch
from ..circuits import Circuit
from ..models import PatchableModel, load_model
from ..patching import patch
from ..paths import path_patch
from ..readings import AttentionScores
from ..results import PatchResult
from ..robustness import grid, middle_layers, off_distribution, window_comparison
from .corpus import PEOPLE_FACTS

N = 64
SD = 2.0
# (row label, task spec) of the sweeps table: every task, IOI under each corruption of the paper's appendix F.
SWEEP_TASKS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("ioi, S2", {"name": "ioi", "n": N, "seed": 0, "corrupt": "S2"}),
    ("ioi, S1 and IO", {"name": "ioi", "n": N, "seed": 0, "corrupt": "S1_IO"}),
    ("ioi, ABC", {"name": "ioi", "n": N, "seed": 0, "corrupt": "ABC"}),
    ("greater_than, YY", {"name": "greater_than", "n": N, "seed": 0}),
    ("docstring, C_def", {"name": "docstring", "n": N, "seed": 0}),
    ("induction, repeated token", {"name": "induction", "n": N, "seed": 0}),
    ("factual, subject", {"name": "factual", "seed": 0}),
    ("factual (people), subject", {"name": "factual", "seed": 0, "n": 128, "path": str(PEOPLE_FACTS)}),
    ("arithmetic, second operand", {"name": "arithmetic", "n": N, "seed": 0}),
)
SETTINGS = (("str", "logit_diff"), ("str", "prob"), ("str", "kl"), ("gn", "logit_diff"), ("gn", "prob"), ("gn", "kl"))


def _pairs(model: PatchableModel, spec: Mapping[str, Any]) -> Any:
    spec = dict(spec)
    return tasks.TASKS[spec.pop("name")](tokenizer=model.tokenizer, **spec)


def _heads(labels: Sequence[str]) -> str:
    return ", ".join(labels) if labels else "-"


def _with_z(result: PatchResult, labels: Sequence[str]) -> str:
    return ", ".join(f"{label} ({result.zscore(label):.2f})" for label in labels) if labels else "-"


def sweeps_table(model: PatchableModel) -> str:
    """Detected heads (negative ones after "neg:") under STR/GN x three metrics, for every task."""
    header = "| task (corruption of) | " + " | ".join(f"{c.upper()} + {m}" for c, m in SETTINGS) + " |"
    lines = [header, "|---" * (len(SETTINGS) + 1) + "|"]
    for label, spec in SWEEP_TASKS:
        g = grid(model, spec, "attn_head", sd=SD)
        cells = []
        for corruption, metric in SETTINGS:
            result = g.results[(corruption, None, metric)]
            positive, negative = result.detected(SD), result.detected(SD, sign="negative")
            cells.append(_with_z(result, positive) + (f"; neg: {_with_z(result, negative)}" if negative else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class IOICircuit:
    """The IOI circuit as path patching finds it, three steps back from the logits (Wang et al. 2023, section 3),
    and what the direct path shows under the probability of IO, which logit difference cancels for a head that
    lifts both names (Zhang & Nanda 2024, section 4)."""

    direct: PatchResult  # every head's effect through the logits only (the direct path)
    through_queries: PatchResult  # through the name movers' queries
    through_values: PatchResult  # through the S-inhibition heads' values
    direct_prob: PatchResult  # the direct path under the probability of IO
    through_booster_values: PatchResult  # through the name boosters' values, under the probability
    name_movers: tuple[str, ...]
    negative: tuple[str, ...]
    s_inhibition: tuple[str, ...]
    upstream: tuple[str, ...]
    boosters: tuple[str, ...]  # direct path under the probability only: heads that lift IO and S alike
    booster_inputs: tuple[str, ...]  # heads acting through the boosters' values, under the probability (a booster too, maybe)
    patterns: Mapping[str, AttentionScores]
    faithfulness: float
    n_heads: int

    @property
    def heads(self) -> tuple[str, ...]:
        groups = (self.name_movers, self.negative, self.s_inhibition, self.upstream, self.boosters, self.booster_inputs)
        return tuple(dict.fromkeys(h for group in groups for h in group))

    @property
    def classes(self) -> dict[str, tuple[str, ...]]:
        """Wang et al.'s classes that path patching found (name movers with negative ones, S-inhibition,
        duplicate-token / induction), non-empty ones only."""
        found = {"name movers": self.name_movers + self.negative, "S-inhibition": self.s_inhibition,
                 "duplicate-token / induction": self.upstream}
        return {name: heads for name, heads in found.items() if heads}

    def report(self) -> str:
        def row(name: str, heads: Sequence[str], result: PatchResult, *patterns: str) -> str:
            def attention(h: str) -> str:
                return " / ".join(f"{self.patterns[p][h]:.2f}" for p in patterns)

            cells = ", ".join(f"{h} (effect {result[h]:+.4g}, z {result.zscore(h):+.2f}, attn {attention(h)})" for h in heads)
            return f"| {name} | {' / '.join(patterns)} | {cells or '-'} |"

        lines = [
            "| class | attention | heads (path-patching effect, z, mean attention weight) |",
            "|---|---|---|",
            row("name movers (direct path, logit difference)", self.name_movers, self.direct, "end->IO", "end->S1", "end->S2"),
            row("negative heads (direct path, logit difference)", self.negative, self.direct, "end->IO", "end->S1"),
            row("S-inhibition (through the name movers' queries)", self.s_inhibition, self.through_queries, "end->S2"),
            row("duplicate-token / induction (through S-inhibition values)", self.upstream, self.through_values, "S2->S1", "S2->S1+1"),
            row("name boosters (direct path, probability only)", self.boosters, self.direct_prob, "end->IO", "end->S1"),
            row("through the boosters' values (probability)", self.booster_inputs, self.through_booster_values, "end->IO", "end->S1"),
            "",
            f"circuit {{{', '.join(self.heads)}}}: {len(self.heads)} of {self.n_heads} heads, "
            f"faithfulness {self.faithfulness:.3f} (ABC resample ablation of every other head, logit difference)",
        ]
        return "\n".join(lines)


def ioi_circuit(model: PatchableModel, n: int = N, seed: int = 0) -> IOICircuit:
    """Name movers, negative heads, S-inhibition and upstream heads by path patching on ABC-corrupted IOI, then
    the heads the probability of IO sees on the direct path and through their values."""
    pairs = tasks.ioi(n, seed=seed, corrupt="ABC", tokenizer=model.tokenizer)
    direct = path_patch(model, pairs, "logits")
    name_movers = tuple(direct.detected(SD))
    negative = tuple(direct.detected(SD, sign="negative"))
    through_queries = path_patch(model, pairs, [f"{h}.q" for h in name_movers + negative])
    s_inhibition = tuple(h for h in through_queries.detected(SD) if h not in name_movers)
    through_values = path_patch(model, pairs, [f"{h}.v" for h in s_inhibition]) if s_inhibition else through_queries
    upstream = tuple(h for h in through_values.detected(SD) if h not in name_movers + s_inhibition) if s_inhibition else ()
    direct_prob = path_patch(model, pairs, "logits", metric="prob")
    boosters = tuple(h for h in direct_prob.detected(SD) if h not in name_movers)
    through_booster_values = (
        path_patch(model, pairs, [f"{h}.v" for h in boosters], metric="prob") if boosters else direct_prob
    )
    booster_inputs = tuple(through_booster_values.detected(SD)) if boosters else ()
    patterns = {
        "end->IO": attention_to(model, pairs, "last", "IO"),
        "end->S1": attention_to(model, pairs, "last", "S1"),
        "end->S2": attention_to(model, pairs, "last", "S2"),
        "S2->S1": attention_to(model, pairs, "S2", "S1"),
        "S2->S1+1": attention_to(model, pairs, "S2", "S1+1"),
    }
    found = IOICircuit(
        direct, through_queries, through_values, direct_prob, through_booster_values, name_movers, negative,
        s_inhibition, upstream, boosters, booster_inputs, patterns, float("nan"), model.n_layers * model.n_heads,
    )
    faithfulness = circuit_patch(model, pairs, Circuit(list(found.heads)), test="faithfulness").score
    return dataclasses.replace(found, faithfulness=float(faithfulness))


def window_report(model: PatchableModel) -> str:
    """Sliding-window (3) MLP patching against summed single layers (section 5), at the last subject token
    (the paper's position) and at the last token, over the middle layers (``middle_layers``)."""
    lines = [
        "| facts | position | corruption | metric | single-layer effects | window-3 joint (middle) | summed (middle) | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, path in (("built-in", None), ("people", PEOPLE_FACTS)):
        pairs = tasks.factual(seed=0, path=path, tokenizer=model.tokenizer)
        for position in ("subject", "last"):
            for corruption in ("str", "gn"):
                single = patch(model, pairs, "mlp", corruption, positions=position)
                joint = patch(model, pairs, "mlp", corruption, positions=position, window=3)
                for metric in ("prob", "logit_diff"):
                    c = window_comparison(single.with_metric(metric), joint.with_metric(metric), middle_layers(model.n_layers))
                    effects = " ".join(f"{e:.3f}" for e in single.with_metric(metric).mean)
                    lines.append(
                        f"| {label} | {position} | {corruption.upper()} | {metric} | {effects} | {c.peak_joint:.3f} | "
                        f"{c.peak_summed:.3f} | {c.peak_ratio:.2f} |"
                    )
    return "\n".join(lines)


def gn_report(model: PatchableModel) -> str:
    """The GN off-distribution check per task: the layers whose noised residual norms are > 3 SD out."""
    lines = ["| task | layers off distribution under GN (z of the mean norm at the noised tokens) |", "|---|---|"]
    for label, spec in SWEEP_TASKS:
        check = off_distribution(model, _pairs(model, spec))
        z = ", ".join(f"{layer}: {check.z[layer]:.1f}" for layer in range(len(check.z)))
        lines.append(f"| {label} | {check.flagged_layers or '-'} ({z}) |")
    return "\n".join(lines)


def circuit_figure(circuit: IOICircuit, path: Path, n_layers: int, n_heads: int) -> None:
    """Heads as dots by layer and index; the circuit's heads coloured by class (the first that holds them), with
    arrows for the measured paths (width proportional to the path-patching effect, within each metric) from a
    sender to each later-layer receiver it acts through, and each direct-path effect printed above its head."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def xy(label: str) -> tuple[float, float]:
        layer, head = map(int, label.split("."))
        return head, layer

    classes = (
        ("name mover (logit difference)", circuit.name_movers, "tab:blue"),
        ("negative head", circuit.negative, "tab:red"),
        ("S-inhibition", circuit.s_inhibition, "tab:orange"),
        ("duplicate-token / induction", circuit.upstream, "tab:green"),
        ("name booster (probability only)", circuit.boosters, "tab:purple"),
        ("acts through a booster's values", circuit.booster_inputs, "tab:olive"),
    )
    fig, ax = plt.subplots(figsize=(1.5 + 0.75 * n_heads, 1.4 + 0.8 * n_layers))
    ax.scatter(*zip(*[(h, layer) for layer in range(n_layers) for h in range(n_heads)]), s=60, c="lightgrey", zorder=1)
    paths = [
        (circuit.upstream, circuit.s_inhibition, circuit.through_values),
        (circuit.s_inhibition, circuit.name_movers + circuit.negative, circuit.through_queries),
        (circuit.booster_inputs, circuit.boosters, circuit.through_booster_values),
    ]
    for senders, receivers, result in paths:
        widest = max([abs(result[s]) for s in senders] + [1e-12])
        for s in senders:
            for r in receivers:
                (x0, y0), (x1, y1) = xy(s), xy(r)
                if y0 < y1:  # a head acts only through later layers' inputs
                    width = 0.5 + 4 * abs(result[s]) / widest
                    ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "lw": width, "color": "0.4"}, zorder=2)
    drawn: set[str] = set()
    for name, heads, colour in classes:
        new = [h for h in heads if h not in drawn]
        drawn.update(new)
        if new:
            ax.scatter(*zip(*map(xy, new)), s=260, c=colour, label=name, zorder=3, edgecolors="black")
            for h in new:
                ax.annotate(h, xy(h), ha="center", va="center", fontsize=7, zorder=4)
    for h in circuit.name_movers + circuit.negative:
        x, y = xy(h)
        ax.annotate(f"LD {circuit.direct[h]:+.2f}", (x, y + 0.32), ha="center", fontsize=7)
    for h in circuit.boosters:
        x, y = xy(h)
        ax.annotate(f"P {circuit.direct_prob[h]:+.3f}", (x, y + 0.32), ha="center", fontsize=7)
    ax.set(xlabel="head", ylabel="layer", xticks=range(n_heads), yticks=range(n_layers), ylim=(-0.6, n_layers - 0.2))
    title = f"IOI (ABC) by path patching: {len(circuit.heads)} of {circuit.n_heads} heads, faithfulness {circuit.faithfulness:.2f}"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--model", default="organism", help="model to measure (default: the shipped organism)")
    parser.add_argument("--only", choices=("sweeps", "ioi", "window", "gn"), help="measure one section")
    parser.add_argument("--figure", type=Path, help="also draw the IOI circuit to this PNG")
    args = parser.parse_args(argv)
    model = load_model(args.model)
    sections = [args.only] if args.only else ["sweeps", "ioi", "window", "gn"]
    if args.figure is not None and "ioi" not in sections:
        sections.append("ioi")
    for section in sections:
        print(f"\n## {section}\n", flush=True)
        if section == "sweeps":
            print(sweeps_table(model), flush=True)
        elif section == "ioi":
            circuit = ioi_circuit(model)
            print(circuit.report(), flush=True)
            if args.figure is not None:
                circuit_figure(circuit, args.figure, model.n_layers, model.n_heads)
                print(f"figure: {args.figure}")
        elif section == "window":
            print(window_report(model), flush=True)
        else:
            print(gn_report(model), flush=True)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
