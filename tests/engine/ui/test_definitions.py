"""The monitor's cache of pipeline definitions: read again when any file a definition is made
of changes, not only the pipeline file (a SQL project's models live in other files)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from engine.ui.definitions import Definitions

SHOP = Path(__file__).resolve().parents[2] / "fixtures" / "sql_projects" / "shop"


def test_a_model_added_or_changed_in_a_project_is_seen_without_a_restart(tmp_path: Path) -> None:
    project = tmp_path / "shop"
    shutil.copytree(SHOP, project)
    path = project / "arrowline_project.yml"
    definitions = Definitions()
    first = definitions.get(path)
    assert definitions.get(path) is first  # nothing changed: the same definition, not re-read
    assert "extra" not in {task.id for task in first.spec.tasks}
    model = project / "models" / "marts" / "extra.sql"
    model.write_text("select 1 as x\n")
    second = definitions.get(path)
    assert "extra" in {task.id for task in second.spec.tasks}
    model.write_text("select 2 as y, 3 as z\n")  # a model's text is read from its file
    stat = model.stat()  # a change within the same mtime tick still changes the size
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert definitions.get(path) is not second  # read again: its plan and lineage change
