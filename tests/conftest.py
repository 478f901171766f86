"""Test-suite setup: test modules importable by name (they share model builders), pytester, a tiny saved
model for the plugin tests, and a failure for every deprecated dependency API the project calls. Offline
mode is the root conftest.py's, shared with hypotheses/.
"""

import logging
import os
import sys
import types
import warnings
from pathlib import Path

import hypothesis  # noqa: F401  (imported here once: pytester's in-process runs would otherwise re-import it, 2 s each)
import pytest

# Tiny models on a shared CPU: a second torch thread only spin-waits (a tiny sweep took 2.5 s instead of 0.02 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["pytester"]

PROJECT = Path(__file__).resolve().parent.parent / "interp_tests"
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def project_caller() -> str | None:
    """``file:line`` of the innermost interp_tests frame on the current stack, or None: the call the project
    made that led to a dependency's deprecation notice."""
    frame = sys._getframe(1)
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.is_relative_to(PROJECT):
            return f"{path.relative_to(PROJECT.parent)}:{frame.f_lineno}"
        frame = frame.f_back
    return None


class DeprecationNotices(logging.Handler):
    """transformers announces some deprecations through its logger (``logger.warning_once``), not warnings."""

    def __init__(self, found: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.found = found

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        caller = project_caller() if "deprecat" in message.lower() else None
        if caller is not None:
            self.found.append(f"{caller}: [{record.name}] {message}")


@pytest.fixture(autouse=True)
def no_deprecated_dependency_calls():
    """Fail a test in which interp_tests itself calls a deprecated API of torch, transformers, nnsight, ...:
    a deprecation warning (or transformers' logged notice) raised with an interp_tests frame on the stack.
    Deprecations that tests or dependencies trigger on their own are left to pytest's warnings summary."""
    found: list[str] = []
    notices = DeprecationNotices(found)
    transformers_logger = logging.getLogger("transformers")
    previous_showwarning = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        caller = project_caller() if issubclass(category, DEPRECATIONS) else None
        if caller is not None:
            found.append(f"{caller}: {category.__name__}: {message} ({filename}:{lineno})")
        # Hand the warning on to whoever shows or records it (pytest's per-test capture, when it is active).
        record = warnings.WarningMessage(message, category, filename, lineno, file, line)
        if previous_showwarning is warnings._showwarning_orig:
            warnings._showwarnmsg_impl(record)
        else:
            previous_showwarning(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        for category in DEPRECATIONS:
            warnings.simplefilter("always", category)
        warnings.showwarning = showwarning
        transformers_logger.addHandler(notices)
        try:
            yield
        finally:
            transformers_logger.removeHandler(notices)
    if found:
        pytest.fail(
            "interp_tests called a deprecated API of a dependency; call its replacement (see the notice):\n"
            + "\n".join(dict.fromkeys(found)),
            pytrace=False,
        )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "ndif: runs against a real local NDIF server (the ndif_server fixture); skipped unless INTERP_NDIF_VENV "
        "names the server's virtual environment ('bash .ci/ndif-setup' builds .venv-ndif)",
    )
    # Most tests patch random models on purpose, which are at chance on every task and never predict its answers:
    # the warnings that say so (tested in test_reliability.py) would otherwise bury the warnings that matter.
    config.addinivalue_line("filterwarnings", "ignore:The model's clean accuracy:interp_tests.errors.InterpWarning")
    config.addinivalue_line("filterwarnings", "ignore:The model essentially never predicts:interp_tests.errors.InterpWarning")


def forget_unloaded_submodules(package: str = "interp_tests") -> None:
    """Drop the attributes by which ``package`` and its subpackages still name submodules that are no longer in
    ``sys.modules``. pytester restores ``sys.modules`` after an in-process run, but a package imported before it
    (interp_tests: the outer run loaded its plugin) keeps those attributes, so ``from .. import patching`` in the
    next run gets the unloaded copy instead of importing anew, and that copy runs the old nnsight under a model
    made by the new one (nnsight then sees no trace: "save() was called outside a trace")."""
    for name, module in list(sys.modules.items()):
        if name != package and not name.startswith(package + "."):
            continue
        for attribute, value in list(vars(module).items()):
            full_name = f"{name}.{attribute}"
            if isinstance(value, types.ModuleType) and value.__name__ == full_name and sys.modules.get(full_name) is not value:
                delattr(module, attribute)


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytester whose in-process runs each start and end with no stale interp_tests submodule
    (``forget_unloaded_submodules``), whatever the outer process imported before."""
    inline_run = pytester.inline_run

    def isolated_inline_run(*args, **kwargs):
        forget_unloaded_submodules()
        try:
            return inline_run(*args, **kwargs)
        finally:
            forget_unloaded_submodules()

    monkeypatch.setattr(pytester, "inline_run", isolated_inline_run)
    return pytester


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``model/`` (a tiny random GPT-2, saved) and ``pairs.jsonl`` (16 oriented IOI pairs)."""
    from interp_tests.testing import ioi_pairs, orient_answers, save_model, tiny_gpt2

    folder = tmp_path_factory.mktemp("tiny")
    model, tokenizer = tiny_gpt2()
    save_model(model, tokenizer, folder / "model")
    orient_answers(model, tokenizer, ioi_pairs(16)).save(folder / "pairs.jsonl")
    return folder


@pytest.fixture(scope="session")
def tiny_sweep(tiny_files: Path):
    """The default sweep (attention heads, STR, logit difference) of ``tiny_files``: the truth claims are judged by."""
    from interp_tests import PromptPairs, load_model, patch

    return patch(load_model(tiny_files / "model"), PromptPairs.load(tiny_files / "pairs.jsonl"))


@pytest.fixture
def two_claims(pytester: pytest.Pytester, tiny_files: Path, tiny_sweep) -> tuple[str, str]:
    """``hypotheses/claims.yaml`` on ``tiny_files`` with two claims sharing one sweep: the top head is detected
    (holds; its sweep written out, its ``expect`` inline) and the weakest is (fails at line 9; ``expect`` as a
    block). Returns the two heads' labels."""
    from pytester_support import write_claims

    top, bottom = tiny_sweep.top(1)[0][0], tiny_sweep.top(1, sign="negative")[0][0]
    write_claims(
        pytester,
        tiny_files,
        f"""\
        - name: the top head is detected
          sweep: {{component: attn_head, corruption: str, metric: logit_diff}}
          expect: {{detected: ["{top}"], sd: {tiny_sweep.zscore(top) - 0.01:.4f}}}
        - name: the weakest head is detected
          expect:
            detected: ["{bottom}"]
        """,
    )
    return top, bottom


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """With ``INTERP_NDIF_VENV`` set (``.ci/run`` sets it), an ndif test that skips, for whatever reason, fails:
    CI must have run it."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.get_closest_marker("ndif") and os.environ.get("INTERP_NDIF_VENV"):
        report.outcome = "failed"
        report.longrepr = f"INTERP_NDIF_VENV is set, so this ndif test may not skip; it skipped: {report.longrepr}"


@pytest.fixture(scope="session")
def ndif_venv() -> Path:
    """The local NDIF server's virtual environment (``INTERP_NDIF_VENV``); skips when the variable is unset, and
    fails, naming the installer, when it names no complete server environment."""
    from ndif_server import INSTALL_COMMAND, VENV_VARIABLE, server_venv

    if not os.environ.get(VENV_VARIABLE):
        pytest.skip(f"needs the local NDIF server: '{INSTALL_COMMAND}', then run with {VENV_VARIABLE}=.venv-ndif")
    return server_venv()


@pytest.fixture(scope="session")
def ndif_server(ndif_venv: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real NDIF server on 127.0.0.1 (``tests/ndif_server.py``) serving ``local/tiny-gpt2`` and
    ``local/tiny-llama``, started once per session (a minute or more) by the first test that asks for it, stopped
    (every process, by process id) when the session ends.

    Skips when ``INTERP_NDIF_VENV`` is unset; when it is set (as ``.ci/run`` does) a server that cannot start
    is an error, never a skip. Use one process (``-p no:xdist``): each xdist worker would start its own.
    """
    from ndif_server import LocalNDIF, tiny_models

    with LocalNDIF(tiny_models(tmp_path_factory.mktemp("ndif-models")), venv=ndif_venv) as server:
        yield server


@pytest.fixture
def ndif_client(ndif_server):
    """``ndif_server`` with this process's nnsight pointed at it for the test (``LocalNDIF.client``)."""
    with ndif_server.client():
        yield ndif_server
