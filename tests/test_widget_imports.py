"""A kernel that shows a widget does not pay for the server: no ``pluv_widget.server``, no PyJWT,
and nothing of ours imports SQLite (IPython's own history does, in every kernel)."""

from __future__ import annotations

import json
import subprocess
import sys

SPY = r"""
import json, sys, traceback

FORBIDDEN = ("pluv_widget.server", "sqlite3", "jwt")
importers = {}

class Spy:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("sqlite3", "jwt") or name.startswith("pluv_widget.server"):
            frames = [f.filename for f in traceback.extract_stack()[:-1] if not f.filename.startswith("<")]
            importers.setdefault(name, frames[-1] if frames else "?")
        return None

sys.meta_path.insert(0, Spy())
import pluv_widget.widget
from pluv_widget import RoomWidget, crdt, create_client
from pluv_widget.widget import WidgetPresence, color_for, display_name
from pluv_widget.widget import RoomWidget as Same
assert Same is RoomWidget
print(json.dumps({"modules": [m for m in sys.modules if m.startswith(FORBIDDEN)], "importers": importers}))
"""


def test_importing_the_widget_imports_no_server_sqlite_or_jwt() -> None:
    out = subprocess.run([sys.executable, "-c", SPY], capture_output=True, text=True, check=True).stdout
    seen = json.loads(out)
    assert not [m for m in seen["modules"] if m.startswith(("pluv_widget.server", "jwt"))], seen
    # SQLite may be loaded by IPython (anywidget → ipywidgets → IPython.core.history), never by us.
    ours = {name: where for name, where in seen["importers"].items() if "/pluv_widget/" in where}
    assert ours == {}, ours


def test_the_server_is_still_one_attribute_away() -> None:
    code = (
        "import pluv_widget, sys; assert 'pluv_widget.server' not in sys.modules; "
        "print(pluv_widget.create_io.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().startswith("pluv_widget.server")
