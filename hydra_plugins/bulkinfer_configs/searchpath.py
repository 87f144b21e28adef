"""Append every ``bulkinfer.configs`` package to the config search path of bulkinfer's app.

Hydra imports every module under the ``hydra_plugins`` namespace package and calls each
:class:`SearchPathPlugin` when it builds a search path. This plugin acts only when the search path
holds bulkinfer's own configs (``pkg://pipeline.conf``, or that package's folder given as a file
path), so other Hydra apps in the same environment are left alone, and appends each registered
config package after them, so a built-in option is never replaced silently.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


def is_bulkinfer_conf(path: str, package: str, directory: Path) -> bool:
    """Whether search-path entry ``path`` is bulkinfer's config package.

    ``path`` is a Hydra search-path entry: ``pkg://a.b`` (also written ``pkg://a/b``), or a
    folder as ``file:///x`` or a plain path; ``package`` is the dotted package name and
    ``directory`` its folder on disk.
    """
    if path.startswith("pkg://"):
        return path[len("pkg://") :].replace("/", ".").strip(".") == package
    if path.startswith("file://"):
        path = path[len("file://") :]
    elif "://" in path:
        return False
    try:
        return Path(path).resolve() == directory.resolve()
    except OSError:
        return False


class BulkinferConfigsSearchPathPlugin(SearchPathPlugin):
    """``pkg://<package>`` for each config package, after bulkinfer's own configs."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from pipeline.app import (
            configs,  # light: no Hydra, no Ray; only when a search path is built
        )

        if not any(
            is_bulkinfer_conf(element.path, configs.CONF_PACKAGE, configs.CONF_DIR)
            for element in search_path.get_path()
        ):
            return
        report = configs.search_path_report()
        for package in report.usable:
            search_path.append(provider=package.provider, path=package.search_path)
        configs.warn_about_search_path()
