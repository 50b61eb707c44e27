"""The demo service: Otsu threshold segmentation of the workspace's T1-MRI image.

Usage: ``python -m dss_console.resources.demo_service WORKSPACE RESULT [--pace SECONDS]
[--fail-with MESSAGE]``. Writes ``segmentation.nii.gz`` and the RESULT workspace (the image
plus the segmentation) and a QC report in the work dir. Reports through ``@dss`` lines on
stdout and, when the runner provides one, through ``$DSS_HOOK`` (as ASHS's scripts do), so
both channels of the engine are exercised by every demo ticket.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from dss_console.sandbox.demo import DEMO_MAIN_TAG
from dss_console.workspace import (
    MAIN_ROLE,
    SEGMENTATION_ROLE,
    NewLayer,
    Workspace,
    WorkspaceError,
    write_workspace,
)
from dss_console.workspace.nifti import NiftiError, read_nifti, write_nifti

__all__ = ["QC_NAME", "SEGMENTATION_NAME", "main", "otsu_threshold"]

SEGMENTATION_NAME = "segmentation.nii.gz"
QC_NAME = "qc.txt"
# Past this many distinct intensities (float images), Otsu runs on a histogram instead of
# on the exact levels; 256 bins is the classic choice and plenty for a threshold.
_MAX_EXACT_LEVELS = 4096
_BINS = 256
_HOOK_TIMEOUT = 60.0
_SAFE_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
# NIfTI xyzt_units (low 3 bits) -> millimetres per unit; unknown (0) is taken as mm.
_MM_PER_UNIT = {1: 1000.0, 2: 1.0, 3: 0.001}


class DemoError(Exception):
    """A failure to report to the end user as the ticket's error."""


def _word(text: object) -> str:
    """One shlex word; double quotes like the protocol's examples (``@dss info "..."``)."""
    # A newline would end the @dss line early and turn the rest into log text.
    value = " ".join(str(text).splitlines())
    if _SAFE_WORD.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Reporter:
    """Sends events as ``@dss`` lines, or through ``$DSS_HOOK`` where asked and available."""

    def __init__(self, hook: str | None, workdir: Path) -> None:
        self.hook = hook or None
        self.workdir = workdir

    def line(self, verb: str, *words: object) -> None:
        # Flushed at once: the runner shows progress live, and a pipe buffers otherwise.
        print("@dss", verb, *(_word(w) for w in words), flush=True)

    def _call_hook(self, *args: str) -> bool:
        if self.hook is None:
            return False
        try:
            # cwd = the work dir, so a hook that resolves relative paths itself agrees with
            # the runner, which resolves them against the work dir.
            done = subprocess.run(
                [self.hook, *args], cwd=self.workdir, timeout=_HOOK_TIMEOUT, check=False
            )
        except (OSError, subprocess.SubprocessError) as exc:
            self.line("warning", f"DSS_HOOK {args[0]} failed: {exc}")
            return False
        if done.returncode != 0:
            self.line("warning", f"DSS_HOOK {args[0]} exited with code {done.returncode}")
            return False
        return True

    def progress(self, value: float, *, via_hook: bool = False) -> None:
        text = f"{value:g}"
        if not (via_hook and self._call_hook("progress", "0", "1", text)):
            self.line("progress", text)

    def info(self, message: str, *, via_hook: bool = False) -> None:
        if not (via_hook and self._call_hook("info", message)):
            self.line("info", message)

    def warning(self, message: str) -> None:
        self.line("warning", message)

    def error(self, message: str) -> None:
        self.line("error", message)

    def attach(self, description: str, path: str, mime: str, *, via_hook: bool = False) -> None:
        if not (via_hook and self._call_hook("attach", description, path, mime)):
            self.line("attach", description, path, mime)


def otsu_threshold(values: Iterable[float]) -> float:
    """Otsu's threshold: voxels ``> t`` form the bright class.

    Exact over distinct levels when there are few (integer images), else over a histogram.
    Raises ValueError when there are fewer than two distinct values.
    """
    counts = Counter(values)
    if len(counts) < 2:
        raise ValueError("the image has a single intensity; there is nothing to separate")
    levels = sorted(counts.items())
    if len(levels) <= _MAX_EXACT_LEVELS:
        # Cut halfway between neighbouring levels, so the threshold reads naturally.
        bounds = [(a + b) / 2 for (a, _), (b, _) in itertools.pairwise(levels)]
    else:
        lo, hi = levels[0][0], levels[-1][0]
        width = (hi - lo) / _BINS
        hist = [0] * _BINS
        for value, count in levels:
            hist[min(int((value - lo) / width), _BINS - 1)] += count
        levels = [(lo + (k + 0.5) * width, c) for k, c in enumerate(hist)]
        bounds = [lo + (k + 1) * width for k in range(_BINS - 1)]
    total = sum(c for _, c in levels)
    total_sum = sum(v * c for v, c in levels)
    best, threshold = -1.0, bounds[0]
    weight0, sum0 = 0, 0.0
    # One bound fewer than levels: the last level cannot be the top of the dark class.
    for (value, count), bound in zip(levels, bounds, strict=False):
        weight0 += count
        sum0 += value * count
        weight1 = total - weight0
        if weight0 == 0 or weight1 == 0:
            continue
        mean0, mean1 = sum0 / weight0, (total_sum - sum0) / weight1
        between = weight0 * weight1 * (mean0 - mean1) ** 2
        if between > best:
            best, threshold = between, bound
    return threshold


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dss_console.resources.demo_service",
        description="DSS demo service: Otsu threshold segmentation of the T1-MRI image.",
    )
    parser.add_argument("workspace", type=Path, help="input ITK-SNAP workspace (.itksnap)")
    parser.add_argument("result", type=Path, help="result workspace to write (.itksnap)")
    parser.add_argument(
        "--pace",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="sleep between steps so a person can watch the progress (default 0)",
    )
    parser.add_argument(
        "--fail-with",
        metavar="MESSAGE",
        help="report MESSAGE as an error and exit 1 (to demonstrate a failing ticket)",
    )
    args = parser.parse_args(list(argv))
    if not (math.isfinite(args.pace) and args.pace >= 0):
        parser.error("--pace must be a number of seconds, 0 or more")
    return args


def _fmt(number: float) -> str:
    return f"{number:.6g}"


def run(args: argparse.Namespace, report: Reporter) -> None:
    def step() -> None:
        if args.pace:
            time.sleep(args.pace)

    def chatter(text: str, *, stderr: bool = False) -> None:
        # What a real tool prints: the job's log, not messages for the user.
        print(f"[otsu-demo] {text}", file=sys.stderr if stderr else sys.stdout, flush=True)

    report.progress(0.05)
    report.info(f"Reading workspace {args.workspace.name}")
    try:
        workspace = Workspace.load(args.workspace)
    except WorkspaceError as exc:
        raise DemoError(f"Cannot read the workspace: {exc}") from None
    tagged = workspace.find_layers(DEMO_MAIN_TAG)
    if tagged:
        layer = tagged[0]
    else:
        layer = workspace.main_layer()
        if layer is None:
            raise DemoError(f"No image tagged {DEMO_MAIN_TAG} in the workspace")
        report.warning(f"No image tagged {DEMO_MAIN_TAG}; using the main image")
    chatter(f"workspace: {args.workspace}")
    chatter(f"input layer {layer.index}: {layer.path} (role {layer.role}, tags "
            f"{','.join(layer.tags) or 'none'})")
    step()

    if args.fail_with is not None:
        raise DemoError(args.fail_with)

    report.progress(0.2)
    try:
        image = read_nifti(layer.path)
    except NiftiError as exc:
        raise DemoError(f"Cannot read the {DEMO_MAIN_TAG} image: {exc}") from None
    header = image.header
    # ITK-SNAP segmentations are 3-D: take the first volume of a 4-D series.
    dims = header.dims[:3]
    voxel_count = math.prod(dims)
    if len(header.dims) > 3 and math.prod(header.dims[3:]) > 1:
        report.warning("The image has several volumes; segmenting the first one")
    values = image.data[:voxel_count]
    spacing = header.spacing[: len(dims)]
    unit = _MM_PER_UNIT.get(header.xyzt_units & 7, 1.0)
    report.info(
        f"Image: {' x '.join(map(str, dims))} voxels of {header.dtype}, "
        f"spacing {' x '.join(_fmt(s * unit) for s in spacing)} mm"
    )
    step()

    report.progress(0.4)
    finite: Iterable[float] = values
    if header.dtype.startswith("float"):
        finite = (v for v in values if math.isfinite(v))
    try:
        threshold = otsu_threshold(finite)
    except ValueError as exc:
        raise DemoError(f"Cannot segment: {exc}") from None
    shown = threshold
    if header.scl_slope not in (0.0, 1.0) or header.scl_inter != 0.0:
        # The intensities a viewer shows are scaled; report the threshold in those.
        shown = threshold * (header.scl_slope or 1.0) + header.scl_inter
    chatter(f"histogram of {voxel_count} voxels; between-class variance maximised at "
            f"{threshold:.1f}")
    report.info(f"Otsu threshold: {shown:.1f}")
    step()

    # Via the hook when there is one: the second reporting channel gets used every run.
    report.progress(0.6, via_hook=True)
    labels = bytes(1 if v > threshold else 0 for v in values)
    selected = labels.count(1)
    result = Path(os.path.abspath(args.result))
    try:
        result.parent.mkdir(parents=True, exist_ok=True)
        segmentation = write_nifti(
            result.parent / SEGMENTATION_NAME,
            labels,
            dims,
            dtype="uint8",
            like=header,
            descrip="dss-console demo: Otsu segmentation",
        )
    except (NiftiError, OSError) as exc:
        raise DemoError(f"Cannot write the segmentation: {exc}") from None
    chatter(f"wrote {segmentation} ({selected} foreground voxels)")
    if selected == 0 or selected == voxel_count:
        chatter("warning: the segmentation is empty or full", stderr=True)
    step()

    report.progress(0.8)
    voxel_ml = math.prod(s * unit for s in spacing[:3]) / 1000.0
    volume_ml = selected * voxel_ml
    qc = (
        "dss-console demo service: Otsu threshold segmentation\n"
        f"input image: {layer.path.name}\n"
        f"dimensions: {' x '.join(map(str, dims))}\n"
        f"voxel spacing (mm): {' x '.join(_fmt(s * unit) for s in spacing)}\n"
        f"Otsu threshold: {shown:.1f}\n"
        f"segmented voxels: {selected} of {voxel_count} "
        f"({100.0 * selected / voxel_count:.2f}%)\n"
        f"segmented volume: {volume_ml:.2f} ml\n"
    )
    try:
        (report.workdir / QC_NAME).write_text(qc, encoding="utf-8")
    except OSError as exc:
        raise DemoError(f"Cannot write the QC report: {exc}") from None
    # Relative: the runner resolves attachments against the work dir and refuses others.
    report.attach("QC report", QC_NAME, "text/plain", via_hook=True)
    report.info(f"Segmented {selected} voxels ({volume_ml:.2f} ml)")
    step()

    report.progress(0.9)
    try:
        write_workspace(
            result,
            [
                NewLayer(path=layer.path, role=MAIN_ROLE, nickname="T1", tags=(DEMO_MAIN_TAG,)),
                NewLayer(path=segmentation, role=SEGMENTATION_ROLE, nickname="Otsu segmentation"),
            ],
        )
    except (WorkspaceError, OSError) as exc:
        raise DemoError(f"Cannot write the result workspace: {exc}") from None
    chatter(f"wrote {result}")
    report.progress(1)
    report.info("Result workspace written")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo service; 0 on success, 1 after reporting an error (2: bad arguments)."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if hasattr(sys.stdout, "reconfigure"):
        # A non-UTF-8 locale must not crash the service over a file name in a message.
        sys.stdout.reconfigure(errors="backslashreplace")
    workdir_env = os.environ.get("DSS_WORKDIR")
    workdir = Path(workdir_env) if workdir_env else Path(os.path.abspath(args.result)).parent
    report = Reporter(os.environ.get("DSS_HOOK"), workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        run(args, report)
    except DemoError as exc:
        report.error(str(exc))
        return 1
    except OSError as exc:
        report.error(f"Demo service failed: {exc}")
        return 1
    return 0
