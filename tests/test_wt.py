"""`dss-console wt`: itksnap-wt's workspace commands, golden output (issue 10).

In process through the same `wt_main` the console script runs; the expected text is
itksnap-wt's layout (WorkspaceTool.cxx / WorkspaceAPI.cxx / FormattedTable.cxx), including
the padding after the last column that awk-based scripts never notice.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dss_console.commands.wt import wt_main
from dss_console.workspace import MAIN_ROLE, NewLayer, Workspace, write_workspace
from dss_console.workspace.nifti import write_nifti
from dss_console.workspace.registry import read_registry
from dss_console.wt.labels import read_label_table

DATA = Path(__file__).with_name("wt_data")


def wt(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = wt_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two small real NIfTI images in the current (temporary) directory."""
    monkeypatch.chdir(tmp_path)
    write_nifti(tmp_path / "t1.nii.gz", [0] * 24, (2, 3, 4))
    write_nifti(tmp_path / "seg.nii.gz", [0] * 24, (2, 3, 4), dtype="uint8")
    return tmp_path


@pytest.fixture
def saved_by_itksnap(tmp_path: Path) -> Path:
    """ITK-SNAP's own workspace file, moved (with its images) from where it was saved."""
    study = tmp_path / "study"
    (study / "images").mkdir(parents=True)
    for name in ("mprage.nii.gz", "tse.nii.gz", "seg.nii.gz"):
        (study / "images" / name).write_bytes(name.encode())
    shutil.copy(DATA / "saved_by_itksnap.itksnap", study / "subject01.itksnap")
    return study / "subject01.itksnap"


def test_layers_list_of_an_itksnap_file_prefix_columns_and_relocation(
        capsys: pytest.CaptureFixture[str], saved_by_itksnap: Path) -> None:
    d = saved_by_itksnap.parent / "images"
    code, out, err = wt(capsys, "-i", str(saved_by_itksnap), "-layers-list")
    assert (code, err) == (0, "")
    w = len(f"{d}/mprage.nii.gz") + 2
    nick = len("T2 coronal & <axial>") + 2
    assert out.splitlines() == [
        "2> Layer  Role          " + "Nickname".ljust(nick) + "Filename".ljust(w)
        + "Tags            ",
        "2> 000    Main          " + "".ljust(nick) + f"{d}/mprage.nii.gz".ljust(w)
        + "T1-MRI,anatomy  ",
        "2> 001    Overlay       T2 coronal & <axial>  " + f"{d}/tse.nii.gz".ljust(w)
        + "T2-MRI          ",
        "2> 002    Segmentation  " + "".ljust(nick) + f"{d}/seg.nii.gz".ljust(w)
        + "                ",
    ]


def test_prefix_rules_p_and_P_and_unprefixed_info(capsys: pytest.CaptureFixture[str],
                                                  saved_by_itksnap: Path) -> None:
    d = saved_by_itksnap.parent / "images"
    code, out, _ = wt(capsys, "-i", str(saved_by_itksnap), "-llf", "T1-MRI", "-p", "T2: ",
                      "-llf", "T2-MRI", "-llf", "anatomy", "-lp", "O:0", "-pgf", "-P",
                      "-prg", "LayerMetaData.Alpha", "-registry-get", "Version")
    assert code == 0
    assert out.splitlines() == [
        f"2> {d}/mprage.nii.gz",
        f"T2: {d}/tse.nii.gz",  # -p applies to the next command only
        f"5> {d}/mprage.nii.gz",
        "INFO: picked layer Layers.Layer[001]",  # informational: never prefixed
        f"7> {d}/tse.nii.gz",
        "0.5",
        "20241202",
    ]


def test_the_readme_grep_idiom(capsys: pytest.CaptureFixture[str], saved_by_itksnap: Path
                               ) -> None:
    _, out, _ = wt(capsys, "-i", str(saved_by_itksnap), "-llf", "T1-MRI")
    picked = [line.split()[1] for line in out.splitlines() if line.startswith("2>")]
    assert picked == [str(saved_by_itksnap.parent / "images" / "mprage.nii.gz")]


@pytest.mark.parametrize(("spec", "key"), [
    ("000", "000"), ("2", "002"), ("M", "000"), ("main", "000"), ("m", "000"), ("S", "002"),
    ("seg", "002"), ("O:0", "001"), ("overlay:-1", "001"), ("A:0", "000"), ("anat:1", "001"),
    ("A:-1", "001"),
])
def test_layer_ids(capsys: pytest.CaptureFixture[str], saved_by_itksnap: Path, spec: str,
                   key: str) -> None:
    code, out, _ = wt(capsys, "-i", str(saved_by_itksnap), "-lp", spec)
    assert (code, out) == (0, f"INFO: picked layer Layers.Layer[{key}]\n")


@pytest.mark.parametrize("spec", ["3", "O:1", "A:2", "X:0", "bogus", "O:-2"])
def test_layer_id_matching_nothing(capsys: pytest.CaptureFixture[str], saved_by_itksnap: Path,
                                   spec: str) -> None:
    code, out, err = wt(capsys, "-i", str(saved_by_itksnap), "-lp", spec, "-o", "never.itksnap")
    assert code == 255 and out == ""
    assert err == (f"dss-console wt: -lp (command 2): layer specification {spec} not found in "
                   "workspace\n")
    assert not Path("never.itksnap").exists()


def test_build_a_workspace_from_scratch(capsys: pytest.CaptureFixture[str], images: Path) -> None:
    code, out, err = wt(capsys, "-layers-set-main", "t1.nii.gz", "-tags-add", "T1-MRI",
                        "-psn", "My T1", "-las", "seg.nii.gz", "-psn", "Result",
                        "-props-set-colormap", "Hot", "-props-set-alpha", "0.5",
                        "-props-set-sticky", "on",
                        "-labels-set", str(DATA / "labels.txt"), "-o", "new.itksnap")
    assert (code, err) == (0, "")
    assert out == ("INFO: picked layer Layers.Layer[000]\n"
                   "INFO: picked layer Layers.Layer[001]\n")
    ws = Workspace.load(images / "new.itksnap")  # the project's own reader
    assert [(la.role, la.nickname, la.tags, la.path) for la in ws.layers] == [
        (MAIN_ROLE, "My T1", ("T1-MRI",), images / "t1.nii.gz"),
        ("SegmentationRole", "Result", (), images / "seg.nii.gz"),
    ]
    reg = ws.registry
    assert reg.get("SaveLocation") == str(images)
    assert reg.get("Layers.Layer[000].ProjectMetaData.Files.Grey.Dimensions") == "2 3 4"
    seg = "Layers.Layer[001].LayerMetaData."
    assert (reg.get(seg + "DisplayMapping.ColorMap.Preset"), reg.get(seg + "Alpha"),
            reg.get(seg + "Sticky")) == ("Hot", "0.5", "1")
    labels = read_label_table(ws.layer_folder(0))
    assert {i: (la.label, la.rgb, la.alpha, la.visible, la.mesh) for i, la in labels.items()} == {
        1: ("CA1", (255, 0, 0), 255, True, True),
        2: ("CA2", (0, 255, 0), 255, True, True),
        3: ("Dentate gyrus", (0, 0, 255), 127, True, False),
    }


def test_labels_clear_and_add_with_offset_and_pattern(capsys: pytest.CaptureFixture[str],
                                                      saved_by_itksnap: Path) -> None:
    out_file = saved_by_itksnap.with_name("out.itksnap")
    code, _, err = wt(capsys, "-i", str(saved_by_itksnap), "-labels-clear",
                      "-labels-add", str(DATA / "labels.txt"), "100", "Right %s",
                      "-labels-add", str(DATA / "labels.txt"), "200", "-labels-add",
                      str(DATA / "labels.txt"), "-o", str(out_file))
    assert (code, err) == (0, "")
    table = read_label_table(Workspace.load(out_file).layer_folder(0))
    assert {i: la.label for i, la in table.items()} == {
        1: "CA1", 2: "CA2", 3: "Dentate gyrus",
        101: "Right CA1", 102: "Right CA2", 103: "Right Dentate gyrus",
        201: "CA1", 202: "CA2", 203: "Dentate gyrus"}
    registry = read_registry(out_file)
    assert registry.get("Layers.Layer[000].ProjectMetaData.IRIS.LabelTable.NumberOfElements") == "9"
    # The label that was in the ITK-SNAP file is gone after -labels-clear.
    assert "Organ" not in out_file.read_text()


def test_labels_set_replaces_the_table(capsys: pytest.CaptureFixture[str],
                                       saved_by_itksnap: Path) -> None:
    wt(capsys, "-i", str(saved_by_itksnap), "-labels-set", str(DATA / "labels.txt"), "-o",
       str(saved_by_itksnap))
    table = read_label_table(Workspace.load(saved_by_itksnap).layer_folder(0))
    assert sorted(table) == [1, 2, 3] and table[1].label == "CA1"


@pytest.mark.parametrize(("content", "problem"), [
    ('1 255 0 0 1 1 1 "A"\n2 0 0 "B"\n', "syntax error on line 2"),
    ('1 255 0 0 1 1 1 no quotes\n', "syntax error on line 1"),
])
def test_unreadable_label_file(capsys: pytest.CaptureFixture[str], saved_by_itksnap: Path,
                               content: str, problem: str) -> None:
    bad = saved_by_itksnap.with_name("bad.txt")
    bad.write_text(content)
    before = saved_by_itksnap.read_bytes()
    code, _, err = wt(capsys, "-i", str(saved_by_itksnap), "-labels-set", str(bad), "-o",
                      str(saved_by_itksnap))
    assert code == 255
    assert err == f"dss-console wt: -labels-set (command 2): label file {bad}: {problem}\n"
    assert saved_by_itksnap.read_bytes() == before


def test_labels_need_a_main_layer_and_a_readable_file(capsys: pytest.CaptureFixture[str],
                                                      images: Path) -> None:
    code, _, err = wt(capsys, "-labels-clear")
    assert code == 255 and "-labels-clear (command 1): layer specification M not found" in err
    code, _, err = wt(capsys, "-layers-set-main", "t1.nii.gz", "-labels-add", "missing.txt")
    assert code == 255 and err == ("dss-console wt: -labels-add (command 2): file "
                                   "'missing.txt' does not exist\n")


def test_tags_add_exclusive_and_delete(capsys: pytest.CaptureFixture[str],
                                       saved_by_itksnap: Path) -> None:
    code, out, _ = wt(capsys, "-i", str(saved_by_itksnap), "-lp", "S", "-tags-add", "zeta",
                      "-tags-add", "alpha", "-tax", "T1-MRI", "-lp", "O:0", "-tags-del", "T2-MRI",
                      "-P", "-lp", "M", "-prg", "Tags", "-lp", "S", "-prg", "Tags",
                      "-prg", "LayerMetaData.Tags", "-lp", "O:0", "-prg", "Tags")
    assert code == 0
    assert [line for line in out.splitlines() if not line.startswith("INFO")] == [
        "anatomy", "T1-MRI,alpha,zeta", "T1-MRI,alpha,zeta", ""]


def test_layers_pick_by_tag_needs_exactly_one(capsys: pytest.CaptureFixture[str],
                                              saved_by_itksnap: Path) -> None:
    code, out, _ = wt(capsys, "-i", str(saved_by_itksnap), "-lpt", "T2-MRI")
    assert (code, out) == (0, "INFO: picked layer Layers.Layer[001]\n")
    code, _, err = wt(capsys, "-i", str(saved_by_itksnap), "-lp", "S", "-ta", "T2-MRI",
                      "-layers-pick-by-tag", "T2-MRI")
    assert code == 255 and err == (
        "dss-console wt: -layers-pick-by-tag (command 4): no unique layer found, tag T2-MRI is "
        "associated with 2 layers\n")


def test_dump_registry_get_set(capsys: pytest.CaptureFixture[str], images: Path) -> None:
    write_workspace(images / "w.itksnap", [NewLayer(images / "t1.nii.gz", nickname="n")])
    code, out, _ = wt(capsys, "-i", "w.itksnap", "-registry-set", "Extra.Key", "v 1",
                      "-registry-get", "Extra.Key", "-registry-get", "No.Such", "-dump")
    assert code == 0
    assert out.splitlines() == [
        "INFO: set registry entry 'Extra.Key' to 'v 1'",
        "3> v 1",
        "4> ",
        "5> Extra:",
        "5>   Key = v 1",
        "5> Layers:",
        "5>   Layer[000]:",
        "5>     LayerMetaData:",
        "5>       CustomNickName = n",
        "5>       Tags = ",
        f"5>     AbsolutePath = {images}/t1.nii.gz",
        "5>     Role = MainRole",
        "5>     Tags = ",
        f"5> SaveLocation = {images}",
        "5> Version = 20241202",
    ]


def test_transform_get_and_set(capsys: pytest.CaptureFixture[str], saved_by_itksnap: Path
                               ) -> None:
    matrix = saved_by_itksnap.with_name("affine.mat")
    matrix.write_text("1 0 0 5\n0 1 0 -2.5\n0 0 1 3\n0 0 0 1\n")
    code, out, _ = wt(capsys, "-i", str(saved_by_itksnap), "-lp", "O:0", "-pgt", "-pst",
                      str(matrix), "-pgt", "-o", str(saved_by_itksnap))
    assert code == 0
    assert out.splitlines()[1:] == [
        "3> 1 0 -0 -0", "3> 0 1 -0 -0", "3> -0 -0 1 0", "3> 0 0 0 1",  # identity, as ITK-SNAP
        "5> 1 0 0 5", "5> 0 1 0 -2.5", "5> 0 0 1 3", "5> 0 0 0 1",
    ]
    reg = read_registry(saved_by_itksnap)
    assert reg.get("Layers.Layer[001].ImageTransform.Offset.Element[0]") == "-5"  # LPS
    assert reg.get("Layers.Layer[001].ImageTransform.IsIdentity") == "0"


def test_adding_layers_follows_itksnap_rules(capsys: pytest.CaptureFixture[str], images: Path
                                            ) -> None:
    code, _, err = wt(capsys, "-las", "seg.nii.gz")
    assert code == 255 and err == ("dss-console wt: -las (command 1): cannot add image in "
                                   "SegmentationRole role to a workspace without main image\n")
    code, out, _ = wt(capsys, "-laa", "t1.nii.gz", "-laa", "t1.nii.gz", "-lsm", "seg.nii.gz",
                      "-lss", "seg.nii.gz", "-lss", "t1.nii.gz", "-ll")
    assert code == 0
    assert [line.split()[1:4] for line in out.splitlines() if line.startswith("6>")] == [
        ["Layer", "Role", "Nickname"], ["000", "Main", str(images / "seg.nii.gz")],
        ["001", "Overlay", str(images / "t1.nii.gz")],
        ["002", "Segmentation", str(images / "t1.nii.gz")]]


@pytest.mark.parametrize(("argv", "message"), [
    (["-i"], "-i (command 1): -i is missing an argument (end of the command line)"),
    (["-i", "nowhere.itksnap"], "-i (command 1): file 'nowhere.itksnap' does not exist"),
    (["-annot-list"], "-annot-list (command 1): not supported by dss-console wt: -annot-list"),
    (["-layers-set-main", "t1.nii.gz", "-psn"],
     "-psn (command 2): -psn is missing an argument (end of the command line)"),
    (["-layers-set-main", "t1.nii.gz", "-psn", "-ll"],
     "-psn (command 2): -psn expects a nickname, instead got '-ll' (arguments may not start "
     "with '-')"),
    (["-layers-set-main", "t1.nii.gz", "bogus"],
     "command 2: expected a command at position 3, instead got 'bogus'"),
    (["-pgf"], "-pgf (command 1): selected object (none picked) is not a valid layer"),
    (["-layers-set-main", "t1.nii.gz", "-props-set-alpha", "x"],
     "-props-set-alpha (command 2): -props-set-alpha expects an alpha value (0..1), "
     "instead got 'x'"),
])
def test_bad_input_is_one_line_and_exit_255(capsys: pytest.CaptureFixture[str], images: Path,
                                            argv: list[str], message: str) -> None:
    code, _, err = wt(capsys, *argv)
    assert (code, err) == (255, f"dss-console wt: {message}\n")


def test_a_corrupt_workspace_is_one_line(capsys: pytest.CaptureFixture[str], images: Path
                                         ) -> None:
    (images / "bad.itksnap").write_text("<registry><folder>")
    code, _, err = wt(capsys, "-i", "bad.itksnap", "-ll")
    assert code == 255 and err.count("\n") == 1 and err.startswith(
        "dss-console wt: -i (command 1): ") and "Traceback" not in err


def test_archive_writes_workspace_and_anonymised_layers(capsys: pytest.CaptureFixture[str],
                                                        saved_by_itksnap: Path) -> None:
    out_dir = saved_by_itksnap.parent.parent / "package"
    out_dir.mkdir()
    code, _, err = wt(capsys, "-i", str(saved_by_itksnap), "-a", str(out_dir / "pkg.itksnap"))
    assert (code, err) == (0, "")
    names = sorted(p.name for p in out_dir.iterdir())
    assert names[-1] == "pkg.itksnap" and len(names) == 4
    assert all(n.startswith(f"layer_00{i}_") for i, n in enumerate(names[:3]))
    ws = Workspace.load(out_dir / "pkg.itksnap")
    assert [la.path.parent for la in ws.layers] == [out_dir] * 3
    assert ws.layers[1].nickname == "T2 coronal & <axial>"


def test_help_and_no_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = wt(capsys, "--help")
    assert code == 0 and "-layers-list" in out and "--shim DIR" in out
    code, out, _ = wt(capsys)
    assert code == 255 and "Usage" in out
