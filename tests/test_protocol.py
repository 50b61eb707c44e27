"""The @dss line protocol, hook arguments, attachment paths and progress chunk arithmetic."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dss_console.engine.protocol import (
    AttachReport,
    MessageReport,
    ProgressReport,
    ProgressTracker,
    ProtocolWarning,
    parse_dss_line,
    parse_hook_args,
    resolve_attachment,
)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "affine.mat").write_text("1 0 0\n")
    (work / "sub" / "qc image.png").write_bytes(b"\x89PNG")
    (tmp_path / "outside.txt").write_text("secret")
    return work


# -- which lines are @dss lines -------------------------------------------------------------


@pytest.mark.parametrize("line", ["hello", "@dssprogress 0.5", " @dss info x", "", "@DSS info x",
                                  "email me @dss.example.org", "@dss-info x"])
def test_ordinary_lines_are_not_dss_lines(line: str, workdir: Path) -> None:
    assert parse_dss_line(line, workdir) is None


@pytest.mark.parametrize("line", ["@dss info hi", "@dss\tinfo hi", "@dss  info hi\r\n",
                                  "@dss info hi\n"])
def test_dss_marker_then_whitespace(line: str, workdir: Path) -> None:
    assert parse_dss_line(line, workdir) == MessageReport("info", "hi")


# -- progress -------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "expected"), [
    ("@dss progress 0.4", ProgressReport(0.0, 1.0, 0.4)),
    ("@dss progress 0.5 1.0 0.3", ProgressReport(0.5, 1.0, 0.3)),
    ("@dss progress 0 0.25 1", ProgressReport(0.0, 0.25, 1.0)),
    ("@dss progress 1.0000001", ProgressReport(0.0, 1.0, 1.0)),  # clamped, no warning
    ("@dss progress -0.1", ProgressReport(0.0, 1.0, 0.0)),
    ("@dss progress 0.2 0.4 7", ProgressReport(0.2, 0.4, 1.0)),
    ("@dss PROGRESS 1e-1", ProgressReport(0.0, 1.0, 0.1)),
])
def test_progress(line: str, expected: ProgressReport, workdir: Path) -> None:
    assert parse_dss_line(line, workdir) == expected


@pytest.mark.parametrize(("line", "words"), [
    ("@dss progress", "got 0 arguments"),
    ("@dss progress 0.1 0.2", "got 2 arguments"),
    ("@dss progress 0 1 0.5 9", "got 4 arguments"),
    ("@dss progress half", "not 'half'"),
    ("@dss progress nan", "not 'nan'"),
    ("@dss progress 0 inf 0.5", "not 'inf'"),
    ("@dss progress 0.8 0.2 0.5", "starts after it ends"),
])
def test_malformed_progress_is_a_warning(line: str, words: str, workdir: Path) -> None:
    report = parse_dss_line(line, workdir)
    assert isinstance(report, ProtocolWarning)
    assert words in report.text
    assert "progress" in report.text


# -- messages -------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "expected"), [
    ('@dss info "Affine done"', MessageReport("info", "Affine done")),
    ("@dss warning low   contrast", MessageReport("warning", "low contrast")),
    ("@dss error 'it''s broken'", MessageReport("error", "its broken")),
    ("@dss error \"can't read T2\" (tag T2-MRI)", MessageReport("error",
                                                               "can't read T2 (tag T2-MRI)")),
    ("@dss info tab\\there", MessageReport("info", "tabthere")),  # shell rules, as documented
    ("@dss info ünïcödé ✓", MessageReport("info", "ünïcödé ✓")),
])
def test_messages(line: str, expected: MessageReport, workdir: Path) -> None:
    assert parse_dss_line(line, workdir) == expected


@pytest.mark.parametrize(("line", "words"), [
    ("@dss info", "needs a message"),
    ("@dss error ''", "needs a message"),
    ("@dss info \"unterminated", "No closing quotation"),
    ("@dss frobnicate 1", "unknown verb 'frobnicate'"),
    ("@dss", "no verb"),
    ("@dss   ", "no verb"),
])
def test_malformed_lines_are_warnings(line: str, words: str, workdir: Path) -> None:
    report = parse_dss_line(line, workdir)
    assert isinstance(report, ProtocolWarning)
    assert words in report.text


def test_a_warning_quotes_a_long_line_only_in_part(workdir: Path) -> None:
    report = parse_dss_line("@dss frob " + "x" * 10_000, workdir)
    assert isinstance(report, ProtocolWarning)
    assert len(report.text) < 400


# -- attachments ----------------------------------------------------------------------------


def test_attach_relative_path_resolves_against_the_workdir(workdir: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.chdir(workdir.parent)  # the engine's cwd must not matter
    report = parse_dss_line('@dss attach "Affine matrix" affine.mat text/plain', workdir)
    assert report == AttachReport("Affine matrix", (workdir / "affine.mat").resolve(),
                                  "text/plain")
    report = parse_dss_line("@dss attach QC 'sub/qc image.png'", workdir)
    assert report == AttachReport("QC", (workdir / "sub" / "qc image.png").resolve(), None)


def test_attach_absolute_path_inside_the_workdir(workdir: Path) -> None:
    report = parse_dss_line(f"@dss attach M {workdir / 'affine.mat'}", workdir)
    assert isinstance(report, AttachReport)
    assert report.path == (workdir / "affine.mat").resolve()


@pytest.mark.parametrize("path", ["../outside.txt", "sub/../../outside.txt", "{outside}",
                                  "/etc/passwd"])
def test_attach_outside_the_workdir_is_refused(path: str, workdir: Path) -> None:
    path = path.replace("{outside}", str(workdir.parent / "outside.txt"))
    report = parse_dss_line(f"@dss attach Leak {path}", workdir)
    assert isinstance(report, ProtocolWarning)
    assert "outside the work dir" in report.text


def test_attach_symlink_pointing_outside_is_refused(workdir: Path) -> None:
    (workdir / "link.txt").symlink_to(workdir.parent / "outside.txt")
    report = parse_dss_line("@dss attach Leak link.txt", workdir)
    assert isinstance(report, ProtocolWarning)
    assert "outside the work dir" in report.text


def test_attach_symlinked_workdir_is_fine(workdir: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(workdir)
    report = parse_dss_line("@dss attach M affine.mat", alias)
    assert isinstance(report, AttachReport)
    assert report.path == (workdir / "affine.mat").resolve()


@pytest.mark.parametrize(("line", "words"), [
    ("@dss attach M missing.txt", "no such file"),
    ("@dss attach M sub", "not a regular file"),
    ("@dss attach M", "got 1 argument"),
    ("@dss attach M affine.mat text/plain extra", "got 4 arguments"),
    ("@dss attach '' affine.mat", "needs a description"),
    ("@dss attach M affine.mat 'not a mime'", "is not a MIME type"),
    ("@dss attach M ''", "empty file name"),
])
def test_bad_attachments_are_warnings(line: str, words: str, workdir: Path) -> None:
    report = parse_dss_line(line, workdir)
    assert isinstance(report, ProtocolWarning)
    assert words in report.text


def test_resolve_attachment_errors_are_sentences(workdir: Path) -> None:
    with pytest.raises(ValueError, match="outside the work dir"):
        resolve_attachment("../outside.txt", workdir)
    with pytest.raises(ValueError, match="no such file"):
        resolve_attachment("nope.txt", workdir)
    with pytest.raises(ValueError, match="NUL"):
        resolve_attachment("a\x00b", workdir)


def test_resolve_attachment_hints_at_the_callers_directory(workdir: Path) -> None:
    elsewhere = workdir.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "report.txt").write_text("x")
    with pytest.raises(ValueError, match=r"exists relative to .*elsewhere.*absolute path"):
        resolve_attachment("report.txt", workdir, cwd=elsewhere)


# -- hook arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "expected"), [
    (["progress", "0", "1", "0.4"], ProgressReport(0.0, 1.0, 0.4)),
    (["progress", "0.5"], ProgressReport(0.0, 1.0, 0.5)),
    (["info", "Affine done"], MessageReport("info", "Affine done")),
    (["error", "two", "words"], MessageReport("error", "two words")),
    (["warning", "quotes ' \" stay"], MessageReport("warning", "quotes ' \" stay")),
    (["attach", "Affine", "affine.mat"], AttachReport("Affine", Path("affine.mat"), None)),
    (["attach", "Affine", "affine.mat", "text/plain"],
     AttachReport("Affine", Path("affine.mat"), "text/plain")),
])
def test_hook_args(args: list[str], expected: object, workdir: Path) -> None:
    if isinstance(expected, AttachReport):
        expected = AttachReport(expected.description, (workdir / expected.path).resolve(),
                                expected.mime_type)
    assert parse_hook_args(args, workdir) == expected


@pytest.mark.parametrize(("args", "words"), [
    ([], "no verb"),
    (["progress", "0", "1"], "got 2 arguments"),
    (["progress", "a", "b", "c"], "not 'a'"),
    (["attach", "x"], "got 1 argument"),
    (["attach", "Leak", "../outside.txt"], "outside the work dir"),
    (["shout", "x"], "unknown verb"),
])
def test_bad_hook_args_are_warnings(args: list[str], words: str, workdir: Path) -> None:
    report = parse_hook_args(args, workdir)
    assert isinstance(report, ProtocolWarning)
    assert words in report.text
    assert "hook call" in report.text


def test_hook_attach_relative_to_the_callers_cwd_gets_a_hint(workdir: Path) -> None:
    elsewhere = workdir.parent / "node_tmp"
    elsewhere.mkdir()
    (elsewhere / "log.txt").write_text("x")
    report = parse_hook_args(["attach", "Log", "log.txt"], workdir, cwd=elsewhere)
    assert isinstance(report, ProtocolWarning)
    assert "node_tmp" in report.text and "absolute path" in report.text


# -- progress chunks ------------------------------------------------------------------------


def test_tracker_sums_chunks() -> None:
    tracker = ProgressTracker()
    assert tracker.total == 0.0
    assert tracker.update(ProgressReport(0.0, 0.5, 1.0)) == pytest.approx(0.5)
    assert tracker.update(ProgressReport(0.5, 1.0, 0.5)) == pytest.approx(0.75)
    assert tracker.update(ProgressReport(0.5, 1.0, 1.0)) == pytest.approx(1.0)
    assert tracker.total == pytest.approx(1.0)


def test_tracker_same_start_with_another_end_replaces() -> None:
    tracker = ProgressTracker()
    tracker.update(ProgressReport(0.0, 1.0, 0.5))
    # The server would answer 500 here (UNIQUE on chunk_start); locally it replaces.
    assert tracker.update(ProgressReport(0.0, 0.5, 1.0)) == pytest.approx(0.5)
    assert tracker.update(ProgressReport(0.0, 0.2, 0.5)) == pytest.approx(0.1)


def test_tracker_value_zero_deletes_chunks_inside() -> None:
    tracker = ProgressTracker()
    tracker.update(ProgressReport(0.0, 0.2, 1.0))
    tracker.update(ProgressReport(0.2, 0.4, 1.0))
    tracker.update(ProgressReport(0.4, 1.0, 0.5))
    assert tracker.total == pytest.approx(0.7)
    # [0.1, 0.5] contains only the 0.2..0.4 chunk.
    assert tracker.update(ProgressReport(0.1, 0.5, 0.0)) == pytest.approx(0.5)
    # The single-value form is chunk 0..1: value 0 clears everything.
    assert tracker.update(ProgressReport(0.0, 1.0, 0.0)) == 0.0
    # A zero chunk that contains nothing changes nothing.
    tracker.update(ProgressReport(0.0, 1.0, 0.3))
    assert tracker.update(ProgressReport(0.0, 0.5, 0.0)) == pytest.approx(0.3)


def test_tracker_total_is_clamped() -> None:
    tracker = ProgressTracker()
    tracker.update(ProgressReport(0.0, 1.0, 1.0))
    tracker.update(ProgressReport(0.5, 1.0, 1.0))  # overlapping chunks sum past 1
    assert tracker.total == 1.0
    assert math.isfinite(tracker.total)


def test_tracker_fed_by_the_parser(workdir: Path) -> None:
    tracker = ProgressTracker()
    for line in ["@dss progress 0 0.5 0.5", "@dss progress 0.5 1 0.2"]:
        report = parse_dss_line(line, workdir)
        assert isinstance(report, ProgressReport)
        tracker.update(report)
    assert tracker.total == pytest.approx(0.35)

