"""Workspace, layer, property, tag and label commands (WorkspaceTool.cxx's first half)."""

from __future__ import annotations

import os
from collections.abc import Callable

from dss_console.workspace import MAIN_ROLE, SEGMENTATION_ROLE, RegistryFolder, WorkspaceError
from dss_console.workspace.workspace import layer_key

from . import labels
from .cmdline import ArgReader, WtError
from .context import RunContext
from .state import ANATOMICAL_ROLE
from .table import format_table

__all__ = ["WORKSPACE_COMMANDS"]

Handler = Callable[[RunContext, ArgReader], None]


# -- I/O and information -------------------------------------------------------------------
def read_workspace(ctx: RunContext, args: ArgReader) -> None:
    ctx.ws.read(args.read_existing_file())


def write_workspace(ctx: RunContext, args: ArgReader) -> None:
    ctx.ws.save(args.read_output_file())


def archive_workspace(ctx: RunContext, args: ArgReader) -> None:
    """-a: the workspace and copies of its layers under anonymised names (as for an
    upload) next to the given workspace file; a directory gets ``workspace.itksnap``."""
    from dss_console.workspace import export_result_workspace

    target = os.path.abspath(args.read_output_file())
    if os.path.isdir(target):
        target = os.path.join(target, "workspace.itksnap")
    try:
        export_result_workspace(ctx.ws.as_workspace(), os.path.dirname(target), 0,
                                copy_layers=True, workspace_name=os.path.basename(target))
    except WorkspaceError as exc:
        raise WtError(str(exc)) from None


def set_prefix(ctx: RunContext, args: ArgReader) -> None:
    ctx.temp_prefix = args.read_string("a prefix")
    ctx.temp_prefix_index = ctx.index + 1


def disable_prefix(ctx: RunContext, args: ArgReader) -> None:
    ctx.prefix_disabled = True


def dump(ctx: RunContext, args: ArgReader) -> None:
    """Registry::Print: folders first, then entries, each level indented two spaces."""
    def walk(folder: RegistryFolder, prefix: str) -> None:
        for name in sorted(folder.folders):
            ctx.raw(f"{prefix}{name}:")
            walk(folder.folders[name], prefix + "  ")
        for name in sorted(folder.entries):
            ctx.raw(f"{prefix}{name} = {folder.entries[name]}")

    walk(ctx.ws.registry, ctx.prefix)


def registry_get(ctx: RunContext, args: ArgReader) -> None:
    ctx.emit(ctx.ws.registry.get(args.read_string("a key")) or "")


def _set_entry(ctx: RunContext, folder: RegistryFolder, key: str, value: str) -> None:
    try:
        folder.set(key, value)
    except (WorkspaceError, ValueError) as exc:
        raise WtError(f"cannot set {key!r}: {exc}") from None
    ctx.info(f"INFO: set registry entry '{key}' to '{value}'")


def registry_set(ctx: RunContext, args: ArgReader) -> None:
    key = args.read_string("a key")
    _set_entry(ctx, ctx.ws.registry, key, args.read_string("a value"))


# -- layers --------------------------------------------------------------------------------
def _pick(ctx: RunContext, key: str) -> None:
    ctx.picked = key
    ctx.info(f"INFO: picked layer {key}")


def layers_list(ctx: RunContext, args: ArgReader) -> None:
    ws = ctx.ws
    rows = [["Layer", "Role", "Nickname", "Filename", "Tags"]]
    for i in range(ws.layer_count()):
        folder = ws.layer_folder(layer_key(i))
        role = folder.entries.get("Role", "")
        cut = role.find("Role")
        rows.append([f"{i:03d}", role[:cut] if cut >= 0 else role,
                     folder.get("LayerMetaData.CustomNickName") or "",
                     ws.actual_path(folder), folder.entries.get("Tags", "")])
    for line in format_table(rows, ctx.prefix):
        ctx.raw(line)


def layers_list_files(ctx: RunContext, args: ArgReader) -> None:
    tag = args.read_string("a tag")
    for key in ctx.ws.layers_with_tag(tag):
        ctx.emit(ctx.ws.actual_path(ctx.ws.layer_folder(key)))


def layers_pick(ctx: RunContext, args: ArgReader) -> None:
    _pick(ctx, ctx.ws.spec_to_key(args.read_string("a layer id")))


def layers_pick_by_tag(ctx: RunContext, args: ArgReader) -> None:
    tag = args.read_string("a tag")
    found = ctx.ws.layers_with_tag(tag)
    if len(found) != 1:
        raise WtError(f"no unique layer found, tag {tag} is associated with {len(found)} layers")
    _pick(ctx, found[0])


def _adder(role: str, replace: bool) -> Handler:
    def handler(ctx: RunContext, args: ArgReader) -> None:
        filename = args.read_existing_file()
        key = (ctx.ws.set_layer if replace else ctx.ws.add_layer)(role, filename)
        _pick(ctx, key)
    return handler


# -- properties of the picked layer --------------------------------------------------------
def props_get_filename(ctx: RunContext, args: ArgReader) -> None:
    ctx.emit(ctx.ws.actual_path(ctx.ws.require_layer(ctx.picked)))


def props_registry_get(ctx: RunContext, args: ArgReader) -> None:
    folder = ctx.ws.require_layer(ctx.picked)
    ctx.emit(folder.get(args.read_string("a key")) or "")


def props_registry_set(ctx: RunContext, args: ArgReader) -> None:
    folder = ctx.ws.require_layer(ctx.picked)
    key = args.read_string("a key")
    _set_entry(ctx, folder, key, args.read_string("a value"))


def props_set_nickname(ctx: RunContext, args: ArgReader) -> None:
    name = args.read_string("a nickname")
    ctx.ws.layer_folder(ctx.picked).set("LayerMetaData.CustomNickName", name)


def props_set_colormap(ctx: RunContext, args: ArgReader) -> None:
    preset = args.read_string("a colormap preset")
    ctx.ws.layer_folder(ctx.picked).set("LayerMetaData.DisplayMapping.ColorMap.Preset", preset)


def props_set_alpha(ctx: RunContext, args: ArgReader) -> None:
    # The key ImageWrapper::WriteMetaData stores the layer's opacity under.
    alpha = args.read_float("an alpha value (0..1)")
    if not 0.0 <= alpha <= 1.0:
        raise WtError(f"alpha must be between 0 and 1, not {alpha:g}")
    ctx.ws.require_layer(ctx.picked).set("LayerMetaData.Alpha", _number(alpha))


def props_set_sticky(ctx: RunContext, args: ArgReader) -> None:
    word = args.read_string("on or off").lower()
    if word not in ("on", "off", "1", "0", "true", "false", "yes", "no"):
        raise WtError(f"expected on or off, not {word!r}")
    sticky = word in ("on", "1", "true", "yes")
    ctx.ws.require_layer(ctx.picked).set("LayerMetaData.Sticky", "1" if sticky else "0")


def props_set_contrast(ctx: RunContext, args: ArgReader) -> None:
    mode = args.read_string("a contrast mode")
    if mode not in ("LINEAR", "L"):
        raise WtError(f"contrast mode {mode} is not supported by dss-console wt (only LINEAR)")
    t0, t1 = args.read_float(), args.read_float()
    curve = ctx.ws.layer_folder(ctx.picked).folder("LayerMetaData.DisplayMapping.Curve",
                                                   create=True)
    assert curve is not None
    curve.entries.clear()
    curve.folders.clear()
    curve.set("NumberOfControlPoints", "3")
    for i, (t, y) in enumerate(((t0, 0.0), ((t0 + t1) / 2.0, 0.5), (t1, 1.0))):
        curve.set(f"ControlPoint[{i}].tValue", _number(t))
        curve.set(f"ControlPoint[{i}].xValue", _number(y))


def _flip_ras_lps(q: list[list[float]]) -> None:
    # The same sign flips AffineTransformHelper applies between RAS and LPS (both ways).
    for i, j in ((2, 0), (2, 1), (0, 2), (1, 2), (0, 3), (1, 3)):
        q[i][j] *= -1


def props_get_transform(ctx: RunContext, args: ArgReader) -> None:
    folder = ctx.ws.require_layer(ctx.picked)
    tf = folder.folder("ImageTransform")
    q = [[1.0 if i == j else 0.0 for j in range(4)] for i in range(4)]
    if tf is not None and _flag(tf.entries.get("IsIdentity"), True) is False:
        for i in range(3):
            q[i][3] = _float(tf.get(f"Offset.Element[{i}]"), 0.0)
            for j in range(3):
                q[i][j] = _float(tf.get(f"Matrix.Element[{i}][{j}]"), 1.0 if i == j else 0.0)
    _flip_ras_lps(q)
    for row in q:
        ctx.emit(" ".join(f"{v:g}" for v in row))


def props_set_transform(ctx: RunContext, args: ArgReader) -> None:
    folder = ctx.ws.require_layer(ctx.picked)
    path = args.read_existing_file()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            words = f.read(1 << 20).split()
        values = [float(w) for w in words[:16]]
    except (OSError, ValueError):
        values = []
    if len(values) < 16:
        raise WtError(f"unable to read 4x4 matrix from file {path}")
    q = [values[4 * i:4 * i + 4] for i in range(4)]
    _flip_ras_lps(q)
    tf = folder.folder("ImageTransform", create=True)
    assert tf is not None
    identity = all(q[i][j] == (1.0 if i == j else 0.0) for i in range(3) for j in range(3))
    if identity and all(q[i][3] == 0.0 for i in range(3)):
        tf.set("IsIdentity", "1")
        tf.folders.pop("Matrix", None)
        tf.folders.pop("Offset", None)
        return
    tf.set("IsIdentity", "0")
    for i in range(3):
        tf.set(f"Offset.Element[{i}]", _number(q[i][3]))
        for j in range(3):
            tf.set(f"Matrix.Element[{i}][{j}]", _number(q[i][j]))


# -- tags ----------------------------------------------------------------------------------
def tags_add(ctx: RunContext, args: ArgReader) -> None:
    tag = args.read_string("a tag")
    folder = ctx.ws.layer_folder(ctx.picked)
    ctx.ws.put_tags(folder, set(ctx.ws.tags(folder)) | {tag})


def tags_add_exclusive(ctx: RunContext, args: ArgReader) -> None:
    tag = args.read_string("a tag")
    folder = ctx.ws.layer_folder(ctx.picked)
    ctx.ws.scrub_tag(ctx.ws.registry, tag)
    ctx.ws.put_tags(folder, set(ctx.ws.tags(folder)) | {tag})


def tags_delete(ctx: RunContext, args: ArgReader) -> None:
    tag = args.read_string("a tag")
    folder = ctx.ws.layer_folder(ctx.picked)
    ctx.ws.put_tags(folder, set(ctx.ws.tags(folder)) - {tag})


# -- labels (kept in the main layer's folder) ----------------------------------------------
def _main_folder(ctx: RunContext) -> RegistryFolder:
    return ctx.ws.layer_folder(ctx.ws.spec_to_key("M"))


def labels_set(ctx: RunContext, args: ArgReader) -> None:
    path = args.read_existing_file()
    main = _main_folder(ctx)
    labels.write_label_table(main, labels.read_label_file(path))


def labels_clear(ctx: RunContext, args: ArgReader) -> None:
    labels.clear_labels(_main_folder(ctx))


def labels_add(ctx: RunContext, args: ArgReader) -> None:
    path = args.read_existing_file()
    offset = args.read_int("a label offset") if args.optional_count() > 0 else 0
    pattern = args.read_string("a label pattern") if args.optional_count() > 0 else "%s"
    labels.add_labels(_main_folder(ctx), path, offset, pattern)


# -- helpers -------------------------------------------------------------------------------
def _number(value: float) -> str:
    """A double as the registry stores it: shortest exact form, no trailing ".0", and the
    sign of -0 kept (the RAS/LPS flips of a transform rely on it round-tripping)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _float(text: str | None, default: float) -> float:
    try:
        return float(str(text))
    except ValueError:
        return default


def _flag(text: str | None, default: bool) -> bool:
    if text is None:
        return default
    return text.strip().lower() in ("1", "true", "yes", "on")


WORKSPACE_COMMANDS: dict[str, Handler] = {}
for _names, _handler in (
    (("-i",), read_workspace),
    (("-o",), write_workspace),
    (("-a",), archive_workspace),
    (("-p", "-prefix"), set_prefix),
    (("-P",), disable_prefix),
    (("-dump",), dump),
    (("-registry-get",), registry_get),
    (("-registry-set",), registry_set),
    (("-layers-list", "-ll"), layers_list),
    (("-layers-list-files", "-llf"), layers_list_files),
    (("-layers-pick", "-lp"), layers_pick),
    (("-layers-pick-by-tag", "-lpt", "-lpbt"), layers_pick_by_tag),
    (("-layers-add-anat", "-laa"), _adder(ANATOMICAL_ROLE, replace=False)),
    (("-layers-add-seg", "-las"), _adder(SEGMENTATION_ROLE, replace=False)),
    (("-layers-set-main", "-ls-main", "-lsm"), _adder(MAIN_ROLE, replace=True)),
    (("-layers-set-seg", "-ls-seg", "-lss"), _adder(SEGMENTATION_ROLE, replace=True)),
    (("-props-get-filename", "-pgf"), props_get_filename),
    (("-props-registry-get", "-prg"), props_registry_get),
    (("-props-registry-set", "-prs"), props_registry_set),
    (("-props-set-nickname", "-psn"), props_set_nickname),
    (("-props-set-colormap",), props_set_colormap),
    (("-props-set-alpha",), props_set_alpha),
    (("-props-set-sticky",), props_set_sticky),
    (("-props-set-contrast",), props_set_contrast),
    (("-props-get-transform", "-pgt"), props_get_transform),
    (("-props-set-transform", "-pst"), props_set_transform),
    # The usage text says -tags-add-excl / -tags-del; the code answers to these names.
    (("-tags-add", "-ta"), tags_add),
    (("-tags-add-exclusive", "-tags-add-excl", "-tax"), tags_add_exclusive),
    (("-tags-delete", "-tags-del", "-td"), tags_delete),
    (("-labels-set",), labels_set),
    (("-labels-clear",), labels_clear),
    (("-labels-add",), labels_add),
):
    for _name in _names:
        WORKSPACE_COMMANDS[_name] = _handler
