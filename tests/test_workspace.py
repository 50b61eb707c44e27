"""ITK-SNAP workspaces: reading, relocation, tags, writing, export, hostile input."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest

from dss_console.workspace import (
    ExportedWorkspace,
    Layer,
    NewLayer,
    RegistryFolder,
    Workspace,
    WorkspaceError,
    export_result_workspace,
    layer_file_extension,
    resolve_layer_path,
    write_workspace,
)
from dss_console.workspace.registry import parse_registry, read_registry, registry_to_xml

# A workspace as ITK-SNAP 4.x saves it (three layers, display mapping, IO hints, label
# table, annotations, time points), with @SAVE@/@T1@/@T2@/@SEG@ filled in by the tests.
ITKSNAP_WORKSPACE = """\
<?xml version="1.0" encoding="UTF-8" ?>
<!--ITK-SNAP (itksnap.org) Project File

This file can be moved/copied along with the images that it references
as long as the relative location of the images to the project file is\x20
the same. Do not modify the SaveLocation entry, or this will not work.
-->
<!DOCTYPE registry [
<!ELEMENT registry (entry*,folder*)>
<!ELEMENT folder (entry*,folder*)>
<!ELEMENT entry EMPTY>
<!ATTLIST folder key CDATA #REQUIRED>
<!ATTLIST entry key CDATA #REQUIRED>
<!ATTLIST entry value CDATA #REQUIRED>
]>
<registry>
  <entry key="SaveLocation" value="@SAVE@" />
  <entry key="Version" value="20241202" />
  <folder key="Annotations" >
    <entry key="Format" value="ITK-SNAP Annotation File" />
    <entry key="FormatDate" value="20150624" />
  </folder>
  <folder key="Layers" >
    <folder key="Layer[000]" >
      <entry key="AbsolutePath" value="@T1@" />
      <entry key="Role" value="MainRole" />
      <entry key="Tags" value="T1-MRI,anatomy" />
      <folder key="IOHints" >
      </folder>
      <folder key="LayerMetaData" >
        <entry key="Alpha" value="255" />
        <entry key="CustomNickName" value="" />
        <entry key="Sticky" value="0" />
        <entry key="Tags" value="T1-MRI,anatomy" />
        <folder key="DisplayMapping" >
          <folder key="ColorMap" >
            <entry key="Preset" value="Grayscale" />
          </folder>
          <folder key="Curve" >
            <entry key="NumberOfControlPoints" value="3" />
            <folder key="ControlPoint[0]" >
              <entry key="tValue" value="0" />
              <entry key="xValue" value="0" />
            </folder>
            <folder key="ControlPoint[1]" >
              <entry key="tValue" value="0.5" />
              <entry key="xValue" value="0.5" />
            </folder>
            <folder key="ControlPoint[2]" >
              <entry key="tValue" value="1" />
              <entry key="xValue" value="1" />
            </folder>
          </folder>
        </folder>
      </folder>
      <folder key="ProjectMetaData" >
        <entry key="GaussianBlurScale" value="1" />
        <folder key="Files" >
          <folder key="Grey" >
            <entry key="Dimensions" value="48 48 32" />
            <entry key="Orientation" value="RAI" />
          </folder>
        </folder>
        <folder key="IRIS" >
          <entry key="SliceViewLayerLayout" value="Stacked" />
          <folder key="LabelTable" >
            <entry key="NumberOfElements" value="1" />
            <folder key="Element[0]" >
              <entry key="Alpha" value="255" />
              <entry key="Color" value="255 0 0" />
              <entry key="Flags" value="1 1" />
              <entry key="Index" value="1" />
              <entry key="Label" value="Organ &quot;A&quot; &amp; shell" />
            </folder>
          </folder>
        </folder>
      </folder>
    </folder>
    <folder key="Layer[001]" >
      <entry key="AbsolutePath" value="@T2@" />
      <entry key="Role" value="OverlayRole" />
      <entry key="Tags" value="T2-MRI" />
      <folder key="IOHints" >
        <entry key="FileFormat" value="NiFTI" />
      </folder>
      <folder key="ITKTransform" >
        <entry key="Tag" value="" />
      </folder>
      <folder key="LayerMetaData" >
        <entry key="Alpha" value="0.5" />
        <entry key="CustomNickName" value="T2 coronal &amp; &lt;axial&gt;" />
        <entry key="Sticky" value="1" />
        <entry key="Tags" value="T2-MRI" />
        <folder key="DisplayMapping" >
          <folder key="ColorMap" >
            <entry key="Preset" value="Hot" />
          </folder>
        </folder>
      </folder>
    </folder>
    <folder key="Layer[002]" >
      <entry key="AbsolutePath" value="@SEG@" />
      <entry key="Role" value="SegmentationRole" />
      <entry key="Tags" value="" />
      <folder key="LayerMetaData" >
        <entry key="Alpha" value="0" />
        <entry key="CustomNickName" value="" />
        <entry key="Sticky" value="1" />
        <entry key="Tags" value="" />
      </folder>
    </folder>
  </folder>
  <folder key="TimePointProperties" >
    <entry key="FormatVersion" value="1" />
    <folder key="TimePoints" >
      <entry key="ArraySize" value="1" />
      <folder key="TimePoint[1]" >
        <entry key="Nickname" value="" />
        <entry key="Tags" value="" />
        <entry key="TimePoint" value="1" />
      </folder>
    </folder>
  </folder>
</registry>
"""

LAYER_NAME = re.compile(r"layer_(\d{3})_([0-9a-f]{64})\.nii\.gz")


def make_images(folder: Path, *names: str) -> list[Path]:
    """Small distinct files standing in for images (export never parses them)."""
    paths = []
    for n, name in enumerate(names):
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(f"image {n} {name}".encode() * (n + 3))
        paths.append(p)
    return paths


def itksnap_workspace(folder: Path, save: str | None = None) -> Path:
    """The ITK-SNAP fixture saved in ``folder`` with its images in ``folder/images``."""
    t1, t2, seg = make_images(folder / "images", "t1.nii.gz", "t2.nii.gz", "seg.nii.gz")
    text = (
        ITKSNAP_WORKSPACE.replace("@SAVE@", save if save is not None else str(folder))
        .replace("@T1@", str(t1))
        .replace("@T2@", str(t2))
        .replace("@SEG@", str(seg))
    )
    path = folder / "study.itksnap"
    path.write_text(text, encoding="utf-8")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- reading -------------------------------------------------------------------------


def test_load_realistic_itksnap_workspace(tmp_path: Path) -> None:
    ws = Workspace.load(itksnap_workspace(tmp_path))
    images = tmp_path / "images"

    assert ws.path == tmp_path / "study.itksnap"
    assert ws.save_location == str(tmp_path)
    assert not ws.moved
    assert [layer.role for layer in ws.layers] == ["MainRole", "OverlayRole", "SegmentationRole"]
    assert ws.layers[1] == Layer(
        index=1,
        role="OverlayRole",
        nickname="T2 coronal & <axial>",
        tags=("T2-MRI",),
        absolute_path=str(images / "t2.nii.gz"),
        path=images / "t2.nii.gz",
    )
    assert ws.layers[0].tags == ("T1-MRI", "anatomy")
    assert ws.layers[0].nickname == ""
    assert ws.layers[2].tags == ()
    assert ws.main_layer() == ws.layers[0]
    label = "Layers.Layer[000].ProjectMetaData.IRIS.LabelTable.Element[0].Label"
    assert ws.registry.get(label) == 'Organ "A" & shell'  # decoded &quot; and &amp;


def test_load_what_write_workspace_wrote(tmp_path: Path) -> None:
    t1, seg = make_images(tmp_path / "in", "t1.nii.gz", "seg & <1>.nii.gz")
    path = write_workspace(
        tmp_path / "out" / "new.itksnap",
        [
            NewLayer(t1, tags=("T1-MRI", "main")),
            NewLayer(seg, role="SegmentationRole", nickname='Result "v1"\n& more', tags=("seg",)),
        ],
    )

    ws = Workspace.load(path)

    assert path == tmp_path / "out" / "new.itksnap"
    assert ws.save_location == str(tmp_path / "out")
    assert ws.registry.get("Version")
    assert [(la.role, la.nickname, la.tags, la.path) for la in ws.layers] == [
        ("MainRole", "", ("T1-MRI", "main"), t1),
        ("SegmentationRole", 'Result "v1"\n& more', ("seg",), seg),
    ]
    text = path.read_text(encoding="utf-8")
    assert text.startswith('<?xml version="1.0" encoding="UTF-8" ?>\n<!--ITK-SNAP (itksnap.org)')
    assert "<!DOCTYPE registry [\n<!ELEMENT registry (entry*,folder*)>" in text
    assert '<entry key="Role" value="MainRole" />' in text
    assert "seg &amp; &lt;1&gt;.nii.gz" in text
    assert "&quot;v1&quot;&#10;&amp; more" in text


def test_written_xml_lists_entries_before_folders_sorted_like_itksnap() -> None:
    reg = RegistryFolder()
    reg.set("b.z", "1")
    reg.set("Zeta", "2")
    reg.set("a.y", "3")
    reg.set("Alpha", "4")

    body = registry_to_xml(reg, header=None).split("<registry>\n", 1)[1]

    assert body == (
        '  <entry key="Alpha" value="4" />\n'
        '  <entry key="Zeta" value="2" />\n'
        '  <folder key="a" >\n    <entry key="y" value="3" />\n  </folder>\n'
        '  <folder key="b" >\n    <entry key="z" value="1" />\n  </folder>\n'
        "</registry>\n"
    )


def test_writer_reproduces_an_itksnap_file_byte_for_byte() -> None:
    # Same prologue, order, indentation and escaping as Registry::WriteToXMLFile.
    assert registry_to_xml(parse_registry(ITKSNAP_WORKSPACE.encode())) == ITKSNAP_WORKSPACE


def test_registry_round_trip_preserves_everything(tmp_path: Path) -> None:
    original = read_registry(itksnap_workspace(tmp_path))

    again = parse_registry(registry_to_xml(original).encode("utf-8"))

    assert again == original
    assert again.has_folder("TimePointProperties.TimePoints.TimePoint[1]")
    assert again.folder("Layers.Layer[000].IOHints") == RegistryFolder()  # empty folder kept


def test_dotted_keys_address_nested_folders_as_in_itksnap() -> None:
    reg = parse_registry(
        b'<registry><folder key="Layers.Layer[000]"><entry key="Meta.Name" value="x"/>'
        b"</folder></registry>"
    )

    assert reg.get("Layers.Layer[000].Meta.Name") == "x"
    assert reg.folder("Layers") is not None and "Layer[000]" in reg.folder("Layers").folders


# --- tags ----------------------------------------------------------------------------


def test_find_layers_by_tag_is_exact(tmp_path: Path) -> None:
    a, b, c = make_images(tmp_path, "a.nii.gz", "b.nii.gz", "c.nii.gz")
    ws = Workspace.load(
        write_workspace(
            tmp_path / "w.itksnap",
            [
                NewLayer(a, tags=("T1-MRI",)),
                NewLayer(b, role="OverlayRole", tags=("T1-MRI", "extra")),
                NewLayer(c, role="OverlayRole", tags=("T1-MRI-old", "t1-mri")),
            ],
        )
    )

    assert [layer.path for layer in ws.find_layers("T1-MRI")] == [a, b]
    assert [layer.index for layer in ws.find_layers("extra")] == [1]
    assert ws.find_layers("T1") == []
    assert ws.find_layers("T1-MRI-OLD") == []
    assert ws.find_layers("") == []


def test_tags_read_from_the_layer_level_entry(tmp_path: Path) -> None:
    # itksnap-wt reads Layers.Layer[i].Tags (comma-separated); empty pieces are no tags.
    path = tmp_path / "w.itksnap"
    path.write_text(
        '<registry><folder key="Layers"><folder key="Layer[000]">'
        '<entry key="AbsolutePath" value="/x.nii"/><entry key="Role" value="MainRole"/>'
        '<entry key="Tags" value="a,,b,a, c"/>'
        '<folder key="LayerMetaData"><entry key="Tags" value="ignored"/></folder>'
        "</folder></folder></registry>"
    )

    assert Workspace.load(path).layers[0].tags == ("a", "b", " c")


# --- relocation ----------------------------------------------------------------------


def test_relocation_when_workspace_and_images_move_together(tmp_path: Path) -> None:
    old = tmp_path / "old"
    ws_file = itksnap_workspace(old)
    new = tmp_path / "elsewhere" / "new"
    new.parent.mkdir()
    shutil.move(str(old), str(new))

    ws = Workspace.load(new / ws_file.name)

    assert ws.moved
    assert [layer.path for layer in ws.layers] == [
        new / "images" / "t1.nii.gz",
        new / "images" / "t2.nii.gz",
        new / "images" / "seg.nii.gz",
    ]
    assert ws.layers[0].absolute_path == str(old / "images" / "t1.nii.gz")


def test_relocation_falls_back_to_absolute_path_when_relative_file_is_missing(
    tmp_path: Path,
) -> None:
    old = tmp_path / "old"
    ws_file = itksnap_workspace(old)
    (tmp_path / "new").mkdir()
    moved_ws = tmp_path / "new" / ws_file.name
    shutil.copy(ws_file, moved_ws)  # the workspace travels, the images stay
    (old / "images" / "t2.nii.gz").unlink()

    ws = Workspace.load(moved_ws)

    assert ws.layers[0].path == old / "images" / "t1.nii.gz"
    # Missing everywhere: still AbsolutePath (what ITK-SNAP would try, and fail on).
    assert ws.layers[1].path == old / "images" / "t2.nii.gz"


def test_relocation_applies_only_to_files_that_exist_at_the_new_place(tmp_path: Path) -> None:
    old = tmp_path / "old"
    ws_file = itksnap_workspace(old)
    new = tmp_path / "new"
    shutil.copytree(old, new)
    (new / "images" / "seg.nii.gz").unlink()

    ws = Workspace.load(new / ws_file.name)

    assert ws.layers[0].path == new / "images" / "t1.nii.gz"
    assert ws.layers[2].path == old / "images" / "seg.nii.gz"


def test_relocation_of_images_outside_the_save_location(tmp_path: Path) -> None:
    # Not under SaveLocation: ITK-SNAP uses a ../ relative path instead of the prefix.
    old_root = tmp_path / "old"
    (img,) = make_images(old_root / "data", "t1.nii.gz")
    ws_file = write_workspace(old_root / "proj" / "w.itksnap", [NewLayer(img)])
    new_root = tmp_path / "new"
    shutil.move(str(old_root), str(new_root))

    ws = Workspace.load(new_root / "proj" / ws_file.name)

    assert ws.layers[0].path == new_root / "data" / "t1.nii.gz"


def test_relocation_of_a_workspace_saved_on_windows(tmp_path: Path) -> None:
    # A ticket uploaded by ITK-SNAP on Windows, downloaded here with its layers.
    (tmp_path / "layer_000_abc.nii.gz").write_bytes(b"x")
    path = tmp_path / "ticket.itksnap"
    path.write_text(
        '<registry><entry key="SaveLocation" value="C:\\Users\\me\\AppData\\Local\\Temp\\x_d"/>'
        '<folder key="Layers"><folder key="Layer[000]">'
        '<entry key="AbsolutePath" value="C:\\Users\\me\\AppData\\Local\\Temp\\x_d\\'
        'layer_000_abc.nii.gz"/><entry key="Role" value="MainRole"/>'
        "</folder></folder></registry>"
    )

    assert Workspace.load(path).layers[0].path == tmp_path / "layer_000_abc.nii.gz"


def test_relative_absolute_path_without_save_location_is_found_next_to_workspace(
    tmp_path: Path,
) -> None:
    (tmp_path / "seg.nii.gz").write_bytes(b"x")
    path = tmp_path / "w.itksnap"
    path.write_text(
        '<registry><folder key="Layers"><folder key="Layer[000]">'
        '<entry key="AbsolutePath" value="seg.nii.gz"/><entry key="Role" value="MainRole"/>'
        "</folder></folder></registry>"
    )

    ws = Workspace.load(path)

    assert ws.save_location is None
    assert ws.layers[0].path == tmp_path / "seg.nii.gz"


def test_resolve_layer_path_rule(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.nii").write_bytes(b"x")
    here = str(tmp_path)

    # Not moved: AbsolutePath, even if a relocated file would exist.
    assert resolve_layer_path("/saved/sub/a.nii", here, here) == "/saved/sub/a.nii"
    # Moved: prefix-relative path applied to the new directory.
    assert resolve_layer_path("/saved/sub/a.nii", "/saved", here) == str(tmp_path / "sub/a.nii")
    # Moved but nothing there: AbsolutePath.
    assert resolve_layer_path("/saved/sub/b.nii", "/saved", here) == "/saved/sub/b.nii"
    # The path *is* the save location: nothing relative to apply.
    assert resolve_layer_path("/saved", "/saved", here) == "/saved"


# --- export --------------------------------------------------------------------------


def test_export_names_hashes_and_rewritten_workspace(tmp_path: Path) -> None:
    src = itksnap_workspace(tmp_path / "work")
    out = tmp_path / "export"

    exported = export_result_workspace(src, out, 42)

    assert isinstance(exported, ExportedWorkspace)
    assert exported.workspace_file == out / "ticket_00000042_results.itksnap"
    assert exported.uploads[-1] == ("ticket_00000042_results.itksnap", exported.workspace_file)
    layer_uploads = exported.uploads[:-1]
    originals = [layer.path for layer in Workspace.load(src).layers]
    assert [source for _, source in layer_uploads] == originals  # not copied
    for index, ((name, _source), original) in enumerate(zip(layer_uploads, originals, strict=True)):
        match = LAYER_NAME.fullmatch(name)
        assert match is not None, name
        assert int(match.group(1)) == index
        # Anonymous: nothing of the file's own name, nor of its bytes' hash (the name is
        # sent first: hashing the bytes would delay the upload by a whole read).
        assert original.name.split(".")[0] not in name
        assert match.group(2) != sha256(original)
    assert len({name.split("_")[2] for name, _ in layer_uploads}) == len(layer_uploads)
    # The same files export to the same names (a retried upload names them alike).
    assert export_result_workspace(src, tmp_path / "export2", 42).uploads[:-1] == layer_uploads
    assert sorted(p.name for p in out.iterdir()) == ["ticket_00000042_results.itksnap"]

    result = Workspace.load(exported.workspace_file)
    assert result.save_location == str(out)
    assert [layer.absolute_path for layer in result.layers] == [
        str(out / name) for name, _ in layer_uploads
    ]


def test_export_preserves_every_other_entry(tmp_path: Path) -> None:
    src = itksnap_workspace(tmp_path / "work")
    out = tmp_path / "export"
    exported = export_result_workspace(src, out, 7)

    before = dict(read_registry(src).walk())
    after = dict(read_registry(exported.workspace_file).walk())
    changed = {k for k in before if k == "SaveLocation" or k.endswith(".AbsolutePath")}

    assert {k: v for k, v in before.items() if k not in changed} == {
        k: v for k, v in after.items() if k not in changed
    }
    assert set(after) == set(before)
    assert after["Layers.Layer[001].IOHints.FileFormat"] == "NiFTI"
    assert after["Layers.Layer[001].LayerMetaData.CustomNickName"] == "T2 coronal & <axial>"
    assert read_registry(exported.workspace_file).has_folder("Layers.Layer[000].IOHints")


def test_downloaded_results_open_from_any_folder(tmp_path: Path) -> None:
    src = itksnap_workspace(tmp_path / "work")
    exported = export_result_workspace(src, tmp_path / "export", 3)
    # The user downloads every uploaded file, under its upload name, into some folder.
    downloads = tmp_path / "user" / "Downloads" / "ticket 3"
    downloads.mkdir(parents=True)
    for name, source in exported.uploads:
        shutil.copyfile(source, downloads / name)

    ws = Workspace.load(downloads / "ticket_00000003_results.itksnap")

    assert ws.moved
    assert [layer.path for layer in ws.layers] == [
        downloads / name for name, _ in exported.uploads[:-1]
    ]
    assert all(layer.path.is_file() for layer in ws.layers)
    assert [layer.tags for layer in ws.layers] == [("T1-MRI", "anatomy"), ("T2-MRI",), ()]


def test_export_copy_layers(tmp_path: Path) -> None:
    src = itksnap_workspace(tmp_path / "work")
    out = tmp_path / "export"

    exported = export_result_workspace(src, out, 5, copy_layers=True)

    originals = [layer.path for layer in Workspace.load(src).layers]
    for (name, local), original in zip(exported.uploads[:-1], originals, strict=True):
        assert local == out / name
        assert local.read_bytes() == original.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == sorted(n for n, _ in exported.uploads)
    # Exporting the export again in place finds the files already there.
    again = export_result_workspace(exported.workspace_file, out, 5, copy_layers=True)
    assert again.uploads == exported.uploads
    assert all(p.is_file() for _, p in again.uploads)


def test_export_progress_reports_the_layers_placed(tmp_path: Path) -> None:
    big = tmp_path / "big.nii.gz"
    big.write_bytes(os.urandom(2 * 1024 * 1024 + 123))  # three 1 MiB chunks
    (small,) = make_images(tmp_path, "small.nii")
    ws = write_workspace(tmp_path / "w.itksnap", [NewLayer(big), NewLayer(small, "OverlayRole")])
    calls: list[tuple[int, int]] = []

    exported = export_result_workspace(
        ws, tmp_path / "out", 1, progress=lambda d, t: calls.append((d, t))
    )

    total = big.stat().st_size + small.stat().st_size
    assert calls[0] == (0, total)
    assert calls[-1] == (total, total)
    assert len(calls) == 3  # the start, then each layer
    assert all(t == total for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert exported.uploads[1][0].endswith(".nii")


def test_export_missing_layer_file_names_layer_and_path(tmp_path: Path) -> None:
    src = itksnap_workspace(tmp_path / "work")
    missing = tmp_path / "work" / "images" / "t2.nii.gz"
    missing.unlink()

    with pytest.raises(WorkspaceError, match=r"layer 1 \(T2 coronal & <axial>\)") as info:
        export_result_workspace(src, tmp_path / "out", 9)

    assert str(missing) in str(info.value)
    assert not (tmp_path / "out" / "ticket_00000009_results.itksnap").exists()


def test_export_io_failure_is_a_workspace_error(tmp_path: Path) -> None:
    src = itksnap_workspace(tmp_path / "work")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the export directory should be")

    with pytest.raises(WorkspaceError, match=r"exporting .* failed"):
        export_result_workspace(src, blocker / "out", 2)


def test_export_rejects_bad_ticket_ids(tmp_path: Path) -> None:
    src = itksnap_workspace(tmp_path / "work")

    with pytest.raises(ValueError):
        export_result_workspace(src, tmp_path / "out", -1)
    with pytest.raises(ValueError):
        export_result_workspace(src, tmp_path / "out", "12")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "ext"),
    [
        ("x.nii.gz", "nii.gz"),
        ("x.nii", "nii"),
        ("scan.v2.NII.GZ", "nii.gz"),
        ("x.mha", "mha"),
        ("x.nrrd", "nrrd"),
        ("x.img.gz", "img.gz"),
        ("/some/dir.d/noext", ""),
        ("noext", ""),
        (".hidden", ""),
        ("archive.gz", "gz"),
        ("weird.ex t", ""),
        ("trailing.", ""),
    ],
)
def test_layer_file_extension(name: str, ext: str) -> None:
    assert layer_file_extension(name) == ext
    assert layer_file_extension(Path(name)) == ext


# --- writing validation --------------------------------------------------------------


def test_write_workspace_refuses_what_itksnap_refuses(tmp_path: Path) -> None:
    a, b = make_images(tmp_path, "a.nii", "b.nii")

    with pytest.raises(WorkspaceError, match="at least one layer"):
        write_workspace(tmp_path / "w.itksnap", [])
    with pytest.raises(WorkspaceError, match="first layer"):
        write_workspace(tmp_path / "w.itksnap", [NewLayer(a, role="OverlayRole")])
    with pytest.raises(WorkspaceError, match="first layer"):
        write_workspace(tmp_path / "w.itksnap", [NewLayer(a), NewLayer(b)])
    with pytest.raises(WorkspaceError, match="role"):
        write_workspace(tmp_path / "w.itksnap", [NewLayer(a), NewLayer(b, role="Snake")])
    with pytest.raises(WorkspaceError, match="tag"):
        write_workspace(tmp_path / "w.itksnap", [NewLayer(a, tags=("a,b",))])
    with pytest.raises(WorkspaceError, match="cannot represent"):
        write_workspace(tmp_path / "w.itksnap", [NewLayer(a, nickname="bell\x07")])
    assert not (tmp_path / "w.itksnap").exists()


# --- hostile and odd input -----------------------------------------------------------


def write(tmp_path: Path, text: str | bytes, name: str = "w.itksnap") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE registry [
<!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
]>
<registry><entry key="SaveLocation" value="&c;" /></registry>
"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE registry [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<registry><folder key="Layers"><folder key="Layer[000]">
<entry key="AbsolutePath" value="&xxe;" /></folder></folder></registry>
"""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("this is not xml at all", "not valid XML"),
        (b"\x1f\x8b\x08\x00binary", "not valid XML"),
        ("<registry><folder key='Layers'>", "not valid XML"),
        ('<html><body key="x"/></html>', "expected <registry>"),
        ("<registry><entry key='SaveLocation' value='/x'/></registry>", "no 'Layers' folder"),
        ("<registry><folder key='Layers'/></registry>", "no layers"),
        (
            "<registry><folder key='Layers'><folder key='Layer[000]'>"
            "<entry key='Role' value='MainRole'/></folder></folder></registry>",
            r"Layers\.Layer\[000\] has no AbsolutePath",
        ),
        ("<registry><folder><entry key='a' value='b'/></folder></registry>", "'key' attribute"),
        ("<registry><entry key='a'/></registry>", "'value' attribute"),
        ("<registry><script/></registry>", "unknown element <script>"),
        ("<registry>" + "<folder key='f'>" * 65 + "</folder>" * 65 + "</registry>", "deeper"),
        ("<registry><entry key='" + "a." * 70 + "b' value='x'/></registry>", "deeper"),
        (BILLION_LAUGHS, "entities"),
        (EXTERNAL_ENTITY, "entities"),
        ("", "empty"),
    ],
)
def test_hostile_or_invalid_files_raise_workspace_error(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    path = write(tmp_path, content)

    with pytest.raises(WorkspaceError, match=message) as info:
        Workspace.load(path)

    assert str(path) in str(info.value)


def test_missing_file_and_directory_raise_workspace_error(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="not found"):
        Workspace.load(tmp_path / "nope.itksnap")
    with pytest.raises(WorkspaceError, match="directory"):
        Workspace.load(tmp_path)


def test_case_insensitive_element_names_like_itksnap(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "<Registry><FOLDER key='Layers'><Folder KEY='Layer[000]'>"
        "<Entry key='AbsolutePath' Value='/a.nii'/></Folder></FOLDER></Registry>",
    )

    assert Workspace.load(path).layers[0].absolute_path == "/a.nii"
