"""Fresh MLflow sqlite stores for tests, made by copying one store that was created
once per test session.

Creating a sqlite store runs MLflow's schema migrations (1-2 s on 2 busy cores); a
test that starts from an empty store needs none of them run again. A copy is the
same empty store (no runs, the Default experiment) that MLflow would have made.
"""

from __future__ import annotations

import shutil
from pathlib import Path


class SqliteStores:
    """new(path) -> the URI of an empty MLflow store at `path` (a copy of the template)."""

    def __init__(self, folder: Path) -> None:
        from mlflow.tracking import MlflowClient

        self.template = folder / "template.db"
        MlflowClient(f"sqlite:///{self.template}").search_experiments()  # creates and migrates it

    def new(self, path: Path) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            raise FileExistsError(f"{path}: a store is already there")
        shutil.copyfile(self.template, path)
        return f"sqlite:///{path}"
