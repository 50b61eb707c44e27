# Replaces PyInstaller's pyi_rth_pyside6 in the Linux bundle (hooks/rthooks.dat).
#
# The stock hook runs when any bundled process starts and imports PySide6.QtCore there, to
# register a qt.conf and set QT_PLUGIN_PATH / QML2_IMPORT_PATH. This bundle is also the CLI:
# `$DSS_HOOK` (run once per progress update of a job), `pro`, the headless worker and the
# sandbox's server processes would each load Qt and ICU without using them (about 55 ms per
# start), and every program they run would inherit Qt variables pointing into the bundle.
#
# Nothing of it is needed here: PySide6 from PyPI registers its own qt.conf when it is
# imported, with the prefix <PySide6 package>/Qt, which inside the bundle is
# _internal/PySide6/Qt, where the spec puts the Qt plugins. So Qt stays unloaded until the
# console window imports it, and no Qt variable is set for child processes. The bundle's
# check (packaging/check_bundle.sh) runs the window offscreen, which fails at once when Qt
# cannot find its platform plugin.
