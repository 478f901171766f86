"""The ``interp-tests`` command: sweep a model on a task, and print a YAML claim that reproduces the finding.

Exploring comes before asserting: ``sweep`` shows what a patching sweep finds and writes it down as a
claim to paste into a claims file; ``evaluate`` checks the model can do the task at all first.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import yaml

from .errors import InterpError, SettingsError, did_you_mean
from .specs import TaskSpec

if TYPE_CHECKING:
    from .models import PatchableModel
    from .pairs import PromptPairs
    from .results import PatchResult

PAIR_FILE_SUFFIXES = (".jsonl", ".yaml", ".yml")
DEFAULT_N = 64
DEFAULT_TASK_SEED = 0
DESCRIPTION = "Explore activation-patching sweeps and turn what they find into YAML claims."
CLAIM_MARKER = (
    "# Claim reproducing this sweep; paste it into a claims YAML file (paths are as given here, and a claims\n"
    "# file reads them relative to itself):"
)
PROGRESS_WIDTH = 30
SWEEP_EXAMPLES = """examples:
  interp-tests sweep --model organism --task ioi --variant corrupt=S2 --component attn_head
  interp-tests sweep --model organism --task ioi --component attn_head --positions last --metric kl --heatmap ioi.png
  interp-tests sweep --model path/to/model --task pairs.jsonl --n 32 --component mlp --corruption gn
"""
DISCOVER_EXAMPLES = """examples:
  interp-tests discover --model organism --task ioi --variant corrupt=S1_IO --method eap_ig --top 50
  interp-tests discover --model path/to/stories260K.bin --task pairs.yaml --method eap --top 20 --curve curve.png
"""
# A discovered faithfulness claim asks for this much less than was measured, rounded down to a multiple of it.
CLAIM_MARGIN = 0.05
EVALUATE_EXAMPLES = """examples:
  interp-tests evaluate --model organism --task ioi --n 200 --seed 1
  interp-tests evaluate --model path/to/stories260K.bin --task pairs.yaml
"""
EXAMPLES = f"""{SWEEP_EXAMPLES}  interp-tests discover --model organism --task ioi --method eap_ig --top 50
  interp-tests evaluate --model organism --task ioi --n 200 --seed 1

'interp-tests COMMAND --help' lists a command's options; 'python -m interp_tests' runs the same command line.
"""


def _generator_names() -> list[str]:
    from .tasks import TASKS, from_file

    return [name for name, make in TASKS.items() if make is not from_file]


def _parse_variant(items: Sequence[str]) -> dict[str, Any]:
    """``["corrupt=S2", "length=10"]`` -> ``{"corrupt": "S2", "length": 10}`` (values read as YAML scalars)."""
    variant = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SettingsError(f"--variant {item!r}: write KEY=VALUE, e.g. --variant corrupt=S2.")
        try:
            variant[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            raise SettingsError(f"--variant {item!r}: {value!r} is not a value; quote it or use a plain word or number.") from None
    return variant


def task_spec(task: str, n: int | None, seed: int | None, variant_items: Sequence[str]) -> TaskSpec:
    """Check the task options before any model loads, so a typo fails in a second, not after a minute."""
    names = _generator_names()
    variant = _parse_variant(variant_items)
    if task in names:
        n, seed = DEFAULT_N if n is None else n, DEFAULT_TASK_SEED if seed is None else seed
        spec = TaskSpec(name=task, n=n, seed=seed, variant=variant)
        spec.check()
        return spec
    if Path(task).suffix in PAIR_FILE_SUFFIXES or Path(task).is_file():
        if seed is not None or variant:
            raise SettingsError(f"--seed and --variant shape generated tasks; the pairs file {task} is read as it is.")
        return TaskSpec(file=Path(task), n=n)
    raise SettingsError(
        f"Unknown task {task!r}.{did_you_mean(task, names)} Choose from {names}, or give the path of a pairs "
        f"file ({', '.join(PAIR_FILE_SUFFIXES)})."
    )


def _positive(kind: Callable[[str], int | float]) -> Callable[[str], int | float]:
    """An argparse type that refuses zero and negative numbers with a usage error, before any model loads."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text} must be positive")
        return value

    return parse


def _positions(value: str) -> str | int:
    """``"3"`` -> 3 (a token index); names (``all``, ``each``, ``last``, a span) stay strings."""
    return int(value) if value.lstrip("-").isdigit() else value


class ProgressBar:
    """A one-line text bar redrawn in place, ``[######......] 120/600 patched runs``, for ``patch(progress=)``."""

    def __init__(self, stream: IO[str], width: int = PROGRESS_WIDTH) -> None:
        self.stream = stream
        self.width = width

    def __call__(self, done: int, total: int) -> None:
        filled = self.width * done // max(total, 1)
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} patched runs")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


# -- the claim ---------------------------------------------------------------------------------------
def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _names(labels: list[str], limit: int = 4) -> str:
    return ", ".join(labels[:limit]) + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def sweep_claim(model: str, task: TaskSpec, result: PatchResult, *, sd: float) -> dict[str, Any]:
    """A claims document whose claims hold for ``result``: positive detections, then negative ones.

    When nothing reaches ``sd``, the claim says so for the strongest three components; when nothing can (``sd``
    above sqrt(n - 1) for n components), it claims the largest effect's rank instead.
    """
    from .claims import unreachable_threshold
    from .corruptions import DEFAULT_NOISE_SCALE

    s = result.settings
    sweep: dict[str, Any] = {"component": s["component"], "corruption": s["corruption"], "metric": result.metric}
    defaults = {"positions": "all", "window": 1, "direction": "denoise"}
    sweep.update({key: s[key] for key, default in defaults.items() if s[key] != default})
    if s["corruption"] == "gn":
        sweep.update(noise_scale=s.get("noise_scale", DEFAULT_NOISE_SCALE), seed=s["seed"])
    if result.is_estimate:
        sweep["method"] = s["method"]
        if s.get("grad_drop"):
            sweep["grad_drop"] = True
    what = f"({s['component']}, {s['corruption']}, {result.metric}{', ' + s['method'] if result.is_estimate else ''})"
    threshold = _number(sd)
    positive, negative = result.detected(sd, "positive"), result.detected(sd, "negative")
    claims = []
    if positive:
        claims.append({"name": f"{_names(positive)} detected {what}", "sweep": sweep,
                       "expect": {"detected": positive, "sd": threshold}})
    if negative:
        claims.append({"name": f"{_names(negative)} detected as negative {what}", "sweep": sweep,
                       "expect": {"negative": negative, "sd": threshold}})
    if not claims and unreachable_threshold(sd, result.mean.size) is None:
        strongest = [label for label, _ in result.top(3, sign="both")]
        claims.append({"name": f"no component stands out {what}", "sweep": sweep,
                       "expect": {"not_detected": strongest, "sign": "both", "sd": threshold}})
    elif not claims:  # no z-score can reach sd, so "not detected" could never fail: claim the ranking
        first = result.top(1)[0][0]
        claims.append({"name": f"{first} has the largest effect {what}", "sweep": sweep,
                       "expect": {"top_k": {"labels": [first], "k": 1}}})
    return {"model": model, "task": task.as_claim(), "claims": claims}


class _ClaimDumper(yaml.SafeDumper):
    """Lists indented under their key, as claims files are written by hand, and no ``&id001`` anchors."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True


def claim_yaml(document: dict[str, Any]) -> str:
    return yaml.dump(document, Dumper=_ClaimDumper, sort_keys=False, default_flow_style=None, width=110, allow_unicode=True)


# -- commands ----------------------------------------------------------------------------------------
def _load(args: argparse.Namespace) -> tuple[PatchableModel, TaskSpec, PromptPairs]:
    from .models import load_model

    spec = task_spec(args.task, args.n, args.seed, args.variant)
    model = load_model(args.model, device=args.device)
    return model, spec, spec.pairs(model.tokenizer)


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate

    model, spec, pairs = _load(args)
    print(f"model {args.model}, task {spec.describe()}")
    print(evaluate(model, pairs, corruption=args.corruption, seed=args.noise_seed, noise_scale=args.noise_scale))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from .evaluation import evaluate
    from .patching import patch
    from .reports import heatmap, require_matplotlib, result_json

    if args.heatmap:
        require_matplotlib()
    model, spec, pairs = _load(args)
    print(f"model {args.model}, task {spec.describe()}\n")
    print("Task performance")
    print(evaluate(model, pairs, corruption=args.corruption, seed=args.noise_seed, noise_scale=args.noise_scale))
    show_progress = args.progress or sys.stderr.isatty()
    result = patch(
        model, pairs, args.component, args.corruption, args.metric, positions=_positions(args.positions),
        window=args.window, direction=args.direction, seed=args.noise_seed, noise_scale=args.noise_scale,
        batch_size=args.batch_size, progress=ProgressBar(sys.stderr) if show_progress else None,
        method=args.method, grad_drop=args.grad_drop,
    )
    print(f"\nPatching effects ({result.describe_settings()})")
    print(result.table(args.top))
    print(f"\nDetected at |z| >= {args.sd:g}")
    for sign in ("positive", "negative"):
        print(f"  {sign}: {', '.join(result.detected(args.sd, sign)) or 'none'}")
    print(f"\n{CLAIM_MARKER}")
    print(claim_yaml(sweep_claim(args.model, spec, result, sd=args.sd)), end="")
    if args.heatmap:
        print(f"\nwrote {heatmap(result, args.heatmap, sd=args.sd, title=spec.describe())}")
    if args.json:
        print(f"wrote {result_json(result, args.json, sd=args.sd, top=args.top)}")
    return 0


def discover_claim(model: str, task: TaskSpec, scores: Any, curve: Any, *, method: str, steps: int, top: int) -> dict[str, Any]:
    """A claims-file document for what ``discover`` found: the top edges stay in the top-``top`` circuit, and that
    circuit stays faithful at the smallest curve fraction whose faithfulness reaches 0.8 (if any does)."""
    shown = scores.top(min(top, 10))
    expect: dict[str, Any] = {"contains": {"edges": shown, "top": top}}
    reached = [(f, v) for f, v in zip(curve.fractions, curve.signed) if v >= 0.8]
    if reached:
        fraction, value = reached[0]
        floor = max(0.0, (int(value / CLAIM_MARGIN) - 1) * CLAIM_MARGIN)
        expect["faithful"] = {"at_fraction": _number(fraction), "at_least": round(floor, 2)}
    expect["cmd"] = {"at_most": round((int(curve.cmd / CLAIM_MARGIN) + 2) * CLAIM_MARGIN, 2)}
    edges: dict[str, Any] = {"method": method, "metric": scores.metric, "corruption": scores.settings.get("corruption", "str")}
    if method == "eap_ig":
        edges["steps"] = steps
    claim = {"name": f"{method} puts {_names(shown)} among its top {top} edges", "edges": edges, "expect": expect}
    return {"model": model, "task": task.as_claim(), "claims": [claim]}


def _discover(args: argparse.Namespace) -> int:
    from .edge_scoring import edge_attribution, faithfulness_curve
    from .evaluation import evaluate

    if args.curve:
        from .reports import require_matplotlib

        require_matplotlib()
    model, spec, pairs = _load(args)
    print(f"model {args.model}, task {spec.describe()}\n")
    print("Task performance")
    print(evaluate(model, pairs, corruption=args.corruption, seed=args.noise_seed, noise_scale=args.noise_scale))
    scores = edge_attribution(
        model, pairs, args.method, steps=args.steps, metric=args.metric, corruption=args.corruption,
        seed=args.noise_seed, noise_scale=args.noise_scale, batch_size=args.batch_size,
    )
    print()
    print(scores.table(args.top))
    curve = faithfulness_curve(model, pairs, scores, noise_scale=args.noise_scale, batch_size=args.batch_size)
    print(f"\n{curve}")
    print(f"\n{CLAIM_MARKER}")
    document = discover_claim(args.model, spec, scores, curve, method=args.method, steps=args.steps, top=args.top)
    print(claim_yaml(document), end="")
    if args.curve:
        print(f"\nwrote {curve.figure(args.curve)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .components import KINDS
    from .choices import BUILTIN_METRICS, CORRUPTIONS, DIRECTIONS, EDGE_METHODS, METHODS, METRICS
    from .corruptions import DEFAULT_NOISE_SCALE

    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("--model", required=True, help="'organism', a model directory, a llama2.c checkpoint or a hub id")
    common.add_argument("--task", required=True,
                        help=f"a task name ({', '.join(_generator_names())}) or a pairs file (.jsonl, .yaml)")
    common.add_argument("--n", type=_positive(int), help=f"number of prompt pairs to generate (default {DEFAULT_N})")
    common.add_argument("--seed", type=int, help=f"seed of the task generator (default {DEFAULT_TASK_SEED})")
    common.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE",
                        help="a task option, e.g. corrupt=S2 (repeatable)")
    common.add_argument("--corruption", choices=CORRUPTIONS, default="str",
                        help="symmetric token replacement or Gaussian noise (default str)")
    common.add_argument("--noise-scale", type=_positive(float), default=DEFAULT_NOISE_SCALE,
                        help=f"Gaussian noise std in embedding stds (default {DEFAULT_NOISE_SCALE:g})")
    common.add_argument("--noise-seed", type=int, default=0, help="seed of the Gaussian noise (default 0)")
    common.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")

    parser = argparse.ArgumentParser(prog="interp-tests", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sweep = commands.add_parser("sweep", parents=[common], help="patch every component and print a claim",
                                description="Patch every component of one kind, rank them, and print a YAML claim.",
                                epilog=SWEEP_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    sweep.add_argument("--component", choices=KINDS, default="attn_head", help="default attn_head")
    sweep.add_argument("--metric", choices=BUILTIN_METRICS, default="logit_diff", help="default logit_diff")
    sweep.add_argument("--positions", default="all", help="all (default), each, a token index, last or a span name")
    sweep.add_argument("--window", type=_positive(int), default=1, help="layers restored together (mlp, attn; default 1)")
    sweep.add_argument("--direction", choices=DIRECTIONS, default="denoise", help="default denoise")
    sweep.add_argument("--method", choices=METHODS, default="exact",
                       help="exact (default) or attribution (AtP: every effect estimated from one backward pass)")
    sweep.add_argument("--grad-drop", action="store_true", help="with --method attribution: add AtP*'s GradDrop")
    sweep.add_argument("--batch-size", type=_positive(int), help="patched rows per forward pass (default: sized to memory)")
    sweep.add_argument("--sd", type=_positive(float), default=2.0, help="detection threshold in SDs (default 2)")
    sweep.add_argument("--top", type=_positive(int), default=10, help="rows of the ranked table (default 10)")
    sweep.add_argument("--heatmap", metavar="PNG", help="write a heatmap (needs matplotlib)")
    sweep.add_argument("--json", metavar="JSON", help="write effects, z-scores and detections as JSON")
    sweep.add_argument("--progress", action="store_true", help="show a progress bar even when stderr is not a terminal")
    sweep.set_defaults(run=_sweep)
    discover = commands.add_parser("discover", parents=[common], help="score every edge and print an edge claim",
                                   description="Score every edge of the model's graph by EAP or EAP-IG, print the top "
                                   "edges and MIB's faithfulness curve, and a YAML edge claim.",
                                   epilog=DISCOVER_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
                                   allow_abbrev=False)
    discover.add_argument("--method", choices=EDGE_METHODS, default="eap_ig", help="default eap_ig")
    discover.add_argument("--steps", type=_positive(int), default=5, help="EAP-IG interpolation steps (default 5)")
    discover.add_argument("--metric", choices=METRICS, default="logit_diff", help="default logit_diff")
    discover.add_argument("--top", type=_positive(int), default=50, help="edges listed and claimed (default 50)")
    discover.add_argument("--batch-size", type=_positive(int), help="rows per forward pass (default: sized to memory)")
    discover.add_argument("--curve", metavar="PNG", help="write the faithfulness curve (needs matplotlib)")
    discover.set_defaults(run=_discover)
    evaluate = commands.add_parser("evaluate", parents=[common], help="print how well the model does the task",
                                   description="Top-1 accuracy, logit difference and P(answer), clean and corrupted.",
                                   epilog=EVALUATE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
                                   allow_abbrev=False)
    evaluate.set_defaults(run=_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for usage and ``InterpError`` failures)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help and on usage errors; report the status instead
        return int(exit_.code or 0)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except InterpError as error:
        print(f"interp-tests: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. an unwritable --heatmap or --json path
        print(f"interp-tests: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interp-tests: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
