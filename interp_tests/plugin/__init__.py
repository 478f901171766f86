"""The interp-tests pytest plugin: options, markers, YAML claim collection and the claims summary.

pytest loads it through the ``pytest11`` entry point. This module and what it imports at startup
stay free of torch, transformers and nnsight, which load when a claim first needs a model, so suites
that never patch a model pay nothing for having interp-tests installed.

What an interp test checked (each claim with its figure and verdict, its sweeps, notes and report files)
goes into the test's ``user_properties``, which JUnit XML (``--junitxml``) writes as ``<properties>`` and
which carry it from xdist workers to the summary; with pytest-html (``--html``) it is also a text extra
of the test, next to its report figures.
"""

from __future__ import annotations

import base64
import re
from collections import Counter
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from . import baselines, fixtures
from .fixtures import RECORD_KEY, SESSION_KEY, InterpOptions, InterpSession, ItemRecord, record_of

DEVICES = ("cpu", "cuda", "auto")
DEFAULT_YAML_PATTERNS = ["hypotheses/**/*.yaml", "hypotheses/**/*.yml", "test_*.yaml", "test_*.yml"]
# The user properties of an interp test: a count of its claims (always there), then one per claim checked
# ("interp claim: detected 0.3 (z >= 2.00)" -> "passed: z(0.3)=+3.87"), per sweep ("computed", "cached",
# "reused"), per figure, per note and per report file.
PROPERTY = "interp"
CLAIM_PREFIX = "interp claim: "
LISTS = {"interp sweep": "sweeps", "interp figure": "figures", "interp note": "notes", "interp report": "reports"}
MARKERS = (
    "interp_model(name): the model an interp test runs on: 'organism', a model directory (relative to the "
    "test file) or a hub id; used by the interp_model, interp_pairs and interp_sweep fixtures.",
    "interp_task(name, n=..., seed=..., **options) or interp_task(file='pairs.jsonl'): the prompt pairs an "
    "interp test runs on; used by the interp_pairs and interp_sweep fixtures.",
)
_PATTERNS = pytest.StashKey[list]()
_CLEARED = pytest.StashKey[int]()


def _add(
    parser: pytest.Parser, flag: str, help: str, *, ini_type: str = "string", ini_default: Any = None, **kwargs: Any
) -> None:
    """An option that is also an ini key of the same name (``--interp-model`` and ``interp_model``)."""
    name = flag[2:].replace("-", "_")
    group = parser.getgroup("interp", "interp-tests (activation-patching claims)")
    group.addoption(flag, dest=name, default=None, help=help, **kwargs)
    parser.addini(name, f"{help} (the command line wins)", type=ini_type, default=ini_default)


def pytest_addoption(parser: pytest.Parser) -> None:
    _add(parser, "--interp-model", "run every interp claim on this model instead of the one it names", metavar="MODEL")
    _add(parser, "--interp-device", "device for interp models: cpu, cuda or auto (cuda when available; default)",
         ini_default="auto", choices=DEVICES)
    _add(parser, "--interp-n-prompts", "override n, the number of prompt pairs, of every interp task", type=int,
         metavar="N")
    _add(parser, "--interp-seed", "override the seed of every interp claim: its task's prompt sampling and its "
         "Gaussian-noise draw", type=int, metavar="SEED")
    _add(parser, "--interp-report-dir", "write a report (figures and tables) of every interp sweep into this directory",
         metavar="DIR")
    _add(parser, "--interp-cache", "reuse patching sweeps cached on disk (default)", ini_type="bool", ini_default=True,
         action="store_true")
    parser.getgroup("interp").addoption("--interp-no-cache", dest="interp_cache", action="store_false", default=None,
                                        help="recompute every patching sweep and leave the disk cache alone")
    _add(parser, "--interp-cache-dir", "directory of the sweep cache (default: .interp_cache in the rootdir)",
         metavar="DIR")
    parser.getgroup("interp").addoption("--interp-clear-cache", dest="interp_clear_cache", action="store_true",
                                        default=False, help="delete every cached sweep before the session starts")
    _add(parser, "--interp-update-baselines", "write the regression baselines of interp claims instead of comparing "
         "with them (review the diff, then commit)", ini_type="bool", ini_default=False, action="store_true")
    _add(parser, "--interp-remote", "run every claim's model remotely on NDIF through nnsight (models named by "
         "their Hugging Face repo id; only their config and tokenizer are read here), for models too large for this "
         "machine; the NDIF host and API key come from --interp-ndif-host, NDIF_HOST, NDIF_API_KEY or nnsight's "
         "config", ini_type="bool", ini_default=False, action="store_true")
    _add(parser, "--interp-ndif-host", "the NDIF server remote models run on (default: NDIF_HOST, else nnsight's "
         "CONFIG.API.HOST), e.g. http://127.0.0.1:8001", metavar="URL")
    parser.addini("interp_yaml_patterns", "glob patterns of YAML claims files, matched against paths relative to the "
                  "rootdir ('**/' spans directories)", type="linelist", default=DEFAULT_YAML_PATTERNS)


def _setting(config: pytest.Config, name: str) -> Any:
    value = config.getoption(name)
    if value is None:
        value = config.getini(name)
    return None if value == "" else value


def _path_setting(config: pytest.Config, name: str) -> Path | None:
    """A path from the command line (relative to the invocation dir) or ini (relative to the ini file)."""
    value = config.getoption(name)
    base = config.invocation_params.dir
    if value is None:
        value = config.getini(name) or None
        base = config.inipath.parent if config.inipath else config.rootpath
    return None if value is None else base / Path(value).expanduser()


def _model_setting(config: pytest.Config) -> str | None:
    """``--interp-model``: a path when one exists relative to where it was given, else a name or hub id."""
    path = _path_setting(config, "interp_model")
    if path is None:
        return None
    return str(path.resolve()) if path.exists() else _setting(config, "interp_model")


def _int_setting(config: pytest.Config, name: str, minimum: int | None) -> int | None:
    value = _setting(config, name)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise pytest.UsageError(f"{name} = {value!r} is not an integer.") from None
    if minimum is not None and number < minimum:
        raise pytest.UsageError(f"{name} = {number} must be at least {minimum}.")
    return number


def read_options(config: pytest.Config) -> InterpOptions:
    device = _setting(config, "interp_device") or "auto"
    if device not in DEVICES:
        raise pytest.UsageError(f"interp_device = {device!r}: use one of {', '.join(DEVICES)}.")
    return InterpOptions(
        model=_model_setting(config),
        device=device,
        n_prompts=_int_setting(config, "interp_n_prompts", minimum=1),
        seed=_int_setting(config, "interp_seed", minimum=None),
        report_dir=_path_setting(config, "interp_report_dir"),
        cache=bool(_setting(config, "interp_cache")),
        cache_dir=_path_setting(config, "interp_cache_dir") or config.rootpath / ".interp_cache",
        update_baselines=bool(_setting(config, "interp_update_baselines")),
        remote=bool(_setting(config, "interp_remote")),
        ndif_host=_setting(config, "interp_ndif_host"),
    )


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex matched at a directory boundary: '*' stays in a directory, '**/' spans them."""
    parts = re.split(r"(\*\*/|\*|\?)", pattern)
    body = "".join({"**/": "(?:[^/]*/)*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part)) for part in parts)
    return re.compile(f"(?:^|/){body}$")


def _progress_writer(config: pytest.Config) -> Callable[[str], None] | None:
    """Under ``-v``, long computations report progress as lines on the terminal (none under xdist workers,
    which have no terminal)."""
    if config.option.verbose < 1:
        return None

    def write(line: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(line)

    return write


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    config.pluginmanager.register(fixtures, "interp_tests.fixtures")
    config.pluginmanager.register(baselines, "interp_tests.baselines")
    config.stash[SESSION_KEY] = InterpSession(read_options(config), _progress_writer(config))
    if config.getoption("interp_clear_cache") and not hasattr(config, "workerinput"):  # once, not per xdist worker
        from .cache import SweepCache

        config.stash[_CLEARED] = SweepCache(config.stash[SESSION_KEY].options.cache_dir).clear()
    config.stash[_PATTERNS] = [_glob_regex(p) for p in config.getini("interp_yaml_patterns")]
    config.pluginmanager.register(ClaimsSummary(config), "interp_tests.summary")


def pytest_report_header(config: pytest.Config) -> str | None:
    cleared = config.stash.get(_CLEARED, None)
    if cleared is None:
        return None
    return f"interp-tests: cleared the sweep cache ({cleared} files) in {config.stash[SESSION_KEY].options.cache_dir}"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    try:
        relative = file_path.relative_to(parent.config.rootpath).as_posix()
    except ValueError:
        relative = file_path.as_posix()
    if not any(pattern.search(relative) for pattern in parent.config.stash[_PATTERNS]):
        return None
    from .yaml_claims import ClaimsFile

    return ClaimsFile.from_parent(parent, path=file_path)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("interp_model") or item.get_closest_marker("interp_task"):
        record_of(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """Collect the claims a test checks, for the summary (only tests that use interp-tests)."""
    record = item.stash.get(RECORD_KEY, None)
    if record is None:
        yield
        return
    from ..claims import recording_claims

    with recording_claims() as outcomes:
        yield
    record.claims.extend((o.claim, o.figure, o.passed) for o in outcomes)


def record_properties(record: ItemRecord) -> list[tuple[str, str]]:
    """The record as user properties (see ``PROPERTY``): readable in JUnit XML, and read back by ``read_record``."""
    passed = sum(ok for *_, ok in record.claims)
    n = len(record.claims)
    properties = [(PROPERTY, f"{n} claim{'s' * (n != 1)}: {passed} passed, {n - passed} failed")]
    properties += [(CLAIM_PREFIX + claim, f"{'passed' if ok else 'failed'}: {figure}") for claim, figure, ok in record.claims]
    properties += [(name, value) for name, field in LISTS.items() for value in getattr(record, field)]
    return properties


def read_record(properties: Iterable[tuple[str, object]]) -> ItemRecord | None:
    """The record of an interp test from its report's user properties; None for any other test."""
    properties = [(str(name), str(value)) for name, value in properties]
    if not any(name == PROPERTY for name, _ in properties):
        return None
    record = ItemRecord()
    for name, value in properties:
        if name.startswith(CLAIM_PREFIX):
            verdict, _, figure = value.partition(": ")
            record.claims.append((name.removeprefix(CLAIM_PREFIX), figure, verdict == "passed"))
        elif name in LISTS:
            getattr(record, LISTS[name]).append(value)
    return record


def _html_extras(record: ItemRecord) -> list[dict[str, Any]]:
    """pytest-html extras of a record: its claims, sweeps and notes as text, and its PNG report figures."""
    from pytest_html import extras

    lines = [f"{'passed' if ok else 'FAILED'}  {claim}: {figure}" for claim, figure, ok in record.claims]
    lines += [f"{name.removeprefix('interp ')}: {value}" for name, value in record_properties(record)
              if name in LISTS and name != "interp report"]
    found = [extras.text("\n".join(lines), name="interp claims")] if lines else []
    for path in map(Path, record.reports):
        if path.suffix == ".png" and path.is_file():
            found.append(extras.png(base64.b64encode(path.read_bytes()).decode("ascii"), name=path.name))
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the record as user properties, which the report copies (and carries to the xdist controller), and,
    under pytest-html, as extras of the report the summary counts (the call's, or a setup that did not pass)."""
    record = item.stash.get(RECORD_KEY, None)
    if record is not None:
        item.user_properties[:] = [p for p in item.user_properties if not str(p[0]).startswith(PROPERTY)]
        item.user_properties.extend(record_properties(record))
    report = yield
    if record is not None and getattr(item.config.option, "htmlpath", None) and (report.when == "call" or not report.passed):
        report.extras = [*getattr(report, "extras", []), *_html_extras(record)]
    return report


@dataclass
class _Row:
    nodeid: str
    outcome: str
    figure: str
    sweeps: list[str]


class ClaimsSummary:
    """Gathers interp test outcomes from reports (local or from xdist workers) and prints the claims table."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.rows: dict[str, _Row] = {}
        self.notes: dict[str, None] = {}
        self.reports: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and report.passed:
            return
        record = read_record(report.user_properties)
        if record is None:
            return
        if report.when == "call" and hasattr(report, "wasxfail"):
            outcome = "xpassed" if report.passed else "xfailed"
        elif report.when != "call" and report.failed:
            outcome = "error"
        else:
            outcome = report.outcome
        claims = record.claims
        failed = [figure for _, figure, passed in claims if not passed]
        if report.skipped and isinstance(report.longrepr, tuple):
            figure = report.longrepr[2].removeprefix("Skipped: ").splitlines()[0]
        else:
            figure = "; ".join([*(failed or [figure for _, figure, _ in claims]), *record.figures]) or "-"
        self.rows[report.nodeid] = _Row(report.nodeid, outcome, figure, record.sweeps)
        self.notes.update(dict.fromkeys(record.notes))
        self.reports.extend(r for r in record.reports if r not in self.reports)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """The claims table under the default verbosity and -v; under -q only the claims that did not pass, with
        the counts; under -qq one line of counts."""
        if not self.rows:
            return
        write, verbosity = terminalreporter.write_line, self.config.get_verbosity()
        outcomes = Counter(row.outcome for row in self.rows.values())
        counted = ", ".join(f"{n} {outcome}" for outcome, n in outcomes.most_common())
        if verbosity <= -2:
            write(f"interp claims: {counted}")
            return
        terminalreporter.write_sep("=", "interp claims")
        rows = {nodeid: row for nodeid, row in self.rows.items() if verbosity >= 0 or row.outcome != "passed"}
        if rows:
            self._write_table(write, rows)
        if verbosity < 0:
            write(f"claims: {counted}")
        counts = Counter(status for row in self.rows.values() for status in row.sweeps)
        if counts:
            options = self.config.stash[SESSION_KEY].options
            where = f"cache: {options.cache_dir}" if options.cache else "disk cache off"
            write(f"sweeps: {counts['computed']} computed, {counts['cached']} from the cache, "
                  f"{counts['reused']} reused within the session ({where})")
        if self.reports:
            write(f"reports: {len(self.reports)} files in {self.config.stash[SESSION_KEY].options.report_dir}")
        for note in self.notes:
            write(f"note: {note}")

    @staticmethod
    def _write_table(write: Callable[[str], None], rows: dict[str, _Row]) -> None:
        figure_width = min(48, max(len("figure"), *(len(r.figure) for r in rows.values())))
        sweeps = {nodeid: "+".join(dict.fromkeys(row.sweeps)) or "-" for nodeid, row in rows.items()}
        sweep_width = max(len("sweep"), *(len(s) for s in sweeps.values())) + 2
        write(f"{'outcome':<9}{'sweep':<{sweep_width}}{'figure':<{figure_width + 2}}claim")
        for nodeid, row in rows.items():
            figure = row.figure if len(row.figure) <= figure_width else row.figure[: figure_width - 3] + "..."
            write(f"{row.outcome:<9}{sweeps[nodeid]:<{sweep_width}}{figure:<{figure_width + 2}}{row.nodeid}")
