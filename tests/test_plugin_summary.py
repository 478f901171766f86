"""What the plugin reports besides pass and fail: the claims summary at each verbosity, and each test's claims
as JUnit XML properties and pytest-html extras."""

from __future__ import annotations

import base64
import html
import json
import re
import xml.etree.ElementTree as ET

import pytest
from pytester_support import write_claims

from interp_tests.plugin import read_record, record_properties
from interp_tests.plugin.fixtures import ItemRecord


def test_the_claims_summary_is_full_by_default_and_under_v(pytester, two_claims):
    for flags in ((), ("-v",)):
        result = pytester.runpytest("--interp-no-cache", *flags)
        result.stdout.fnmatch_lines(
            [
                "*= interp claims =*",
                "outcome  sweep*figure*claim",
                "passed   computed*hypotheses/claims.yaml::the top head is detected",
                "failed   reused*hypotheses/claims.yaml::the weakest head is detected",
                "sweeps: 1 computed, 0 from the cache, 1 reused within the session*",
            ]
        )


def test_q_shows_only_the_claims_that_did_not_pass_and_qq_one_line(pytester, two_claims):
    quiet = pytester.runpytest("-q")
    quiet.stdout.fnmatch_lines(
        [
            "*= interp claims =*",
            "outcome  sweep*figure*claim",
            "failed   reused*hypotheses/claims.yaml::the weakest head is detected",
            "claims: 1 passed, 1 failed",
            "sweeps: 1 computed, 0 from the cache, 1 reused within the session*",
        ]
    )
    assert "::the top head is detected" not in quiet.stdout.str()
    quieter = pytester.runpytest("-qq")  # the sweep from the cache now
    quieter.stdout.fnmatch_lines(["interp claims: 1 passed, 1 failed"])
    assert "= interp claims =" not in quieter.stdout.str() and "sweeps:" not in quieter.stdout.str()


def test_q_with_every_claim_passing_shows_the_counts_only(pytester, tiny_files):
    write_claims(pytester, tiny_files, "- name: holds\n  expect: {not_detected: ['0.0'], sd: 50}\n")
    result = pytester.runpytest("-q")
    result.stdout.fnmatch_lines(["*= interp claims =*", "claims: 1 passed", "sweeps: 1 computed*"])
    assert "outcome  sweep" not in result.stdout.str()


def test_junit_xml_holds_each_claim_with_its_threshold_figure_and_verdict(pytester, two_claims, tiny_sweep):
    top, bottom = two_claims
    pytester.runpytest("--junitxml=junit.xml")
    cases = {case.get("name"): case for case in ET.parse(pytester.path / "junit.xml").iter("testcase")}
    properties = {
        name: [(p.get("name"), p.get("value")) for p in case.iter("property")] for name, case in cases.items()
    }
    z_top = f"{tiny_sweep.zscore(top):+.2f}"
    assert properties["the top head is detected"] == [
        ("interp", "1 claim: 1 passed, 0 failed"),
        (f"interp claim: detected {top} (z >= {tiny_sweep.zscore(top) - 0.01:.2f})", f"passed: z({top})={z_top}"),
        ("interp sweep", "computed"),
    ]
    assert properties["the weakest head is detected"] == [
        ("interp", "1 claim: 0 passed, 1 failed"),
        (f"interp claim: detected {bottom} (z >= 2.00)", f"failed: z({bottom})={tiny_sweep.zscore(bottom):+.2f}"),
        ("interp sweep", "reused"),
    ]
    assert cases["the weakest head is detected"].find("failure") is not None


def test_a_record_survives_its_user_properties():
    record = ItemRecord(
        sweeps=["computed", "reused"], claims=[("detected 0.1 (z >= 2.00)", "z(0.1)=+3.10", True),
                                               ("top 1: 0.2", "rank(0.2)=2: of 12", False)],
        figures=["window peak ratio 1.20"], notes=["a note: with a colon"], reports=["out/a.png"],
    )
    assert read_record([("other", "x"), *record_properties(record)]) == record
    assert read_record([("other", "x")]) is None


def test_pytest_html_shows_each_claim_and_the_report_figures(pytester, two_claims, tiny_sweep):
    pytest.importorskip("pytest_html")
    result = pytester.runpytest("--html=report.html", "--self-contained-html", "--interp-report-dir=figures")
    result.assert_outcomes(passed=1, failed=1)
    page = (pytester.path / "report.html").read_text()
    blob = json.loads(html.unescape(re.search(r'data-jsonblob="([^"]*)"', page)[1]))
    extras = {nodeid.split("::")[1]: [e for run in runs for e in run["extras"]] for nodeid, runs in blob["tests"].items()}

    def text(extra: dict) -> str:
        return base64.b64decode(extra["content"].removeprefix("data:text/plain;charset=utf-8;base64,")).decode()

    top, bottom = two_claims
    claims, figure = extras["the top head is detected"]
    assert (claims["name"], figure["name"], figure["format_type"]) == (
        "interp claims", "claims.the_top_head_is_detected.png", "image")
    assert text(claims) == (f"passed  detected {top} (z >= {tiny_sweep.zscore(top) - 0.01:.2f}): "
                            f"z({top})={tiny_sweep.zscore(top):+.2f}\nsweep: computed")
    claims, figure = extras["the weakest head is detected"]
    assert text(claims) == f"FAILED  detected {bottom} (z >= 2.00): z({bottom})={tiny_sweep.zscore(bottom):+.2f}\nsweep: reused"
    assert figure["content"].startswith("data:image/png;base64,iVBORw0KGgo")  # the PNG signature


def test_without_html_no_extras_are_attached(pytester, two_claims):
    pytester.makeconftest(
        "import pytest\n\n@pytest.hookimpl(trylast=True)\ndef pytest_runtest_logreport(report):\n"
        "    assert not getattr(report, 'extras', None)\n"
    )
    pytester.runpytest("--interp-report-dir=figures").assert_outcomes(passed=1, failed=1)
