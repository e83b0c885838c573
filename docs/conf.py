"""Sphinx configuration for trio-uring.

autodoc imports the *installed* trio_uring (``nox -s docs`` installs it; the
compiled ``trio_uring._ring_ffi`` must exist, so the source tree is
deliberately not put on ``sys.path``). No intersphinx: the docs build must
work offline.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.directives.other import Include

project = "trio-uring"
author = "trio-uring developers"
copyright = "trio-uring developers"
try:
    release = importlib.metadata.version("trio-uring")
except importlib.metadata.PackageNotFoundError:
    release = "unknown"
version = release

HAVE_MYST = importlib.util.find_spec("myst_parser") is not None

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
if HAVE_MYST:
    extensions.append("myst_parser")

source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "requirements.txt", "_echo_results.rst"]

# Unresolved cross-references to trio, the stdlib and typing would each be a
# warning without intersphinx, so nitpicky stays off.
nitpicky = False

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options: dict[str, Any] = {}

html_theme = "alabaster"
html_title = f"trio-uring {release}"
html_static_path: list[str] = []


class MarkdownInclude(Include):
    """``.. markdown-include:: path``: a Markdown file, rendered with MyST.

    Without myst-parser the file's first ``# `` heading becomes the page title
    and the rest is shown as a Markdown code block, so the build never
    depends on an optional package.
    """

    def run(self) -> Any:
        if HAVE_MYST:
            self.options["parser"] = directives.parser_name("myst_parser.sphinx_")
            return super().run()
        rel, path = self.env.relfn2path(self.arguments[0])
        self.env.note_dependency(rel)
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        title = Path(path).stem
        if lines and lines[0].startswith("# "):
            title, lines = lines[0][2:].strip(), lines[1:]
        rst = [title, "=" * len(title), "", ".. code-block:: markdown", ""]
        rst += ["   " + line if line.strip() else "" for line in lines]
        self.state_machine.insert_input(rst, path)
        return []


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("markdown-include", MarkdownInclude)
    return {"parallel_read_safe": True}
