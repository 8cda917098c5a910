"""Files: CSV, NDJSON and Parquet sources (paths, globs, lists); Parquet sinks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from connectors.base import (
    Capabilities,
    Connector,
    ConnectorContext,
    NamingContext,
    SinkResult,
    Unknown,
)
from connectors.files.config import FilesSource, ParquetSink
from connectors.files.reference import SECTIONS
from engine.core.config import ConfigModel
from engine.core.errors import ArrowlineError
from engine.core.files import FileVersion
from engine.core.places import Place
from engine.core.problems import Finding
from engine.core.tables import InputTable

__all__ = ["CONNECTOR", "FilesConnector"]


class FilesConnector(Connector):
    name = "files"
    # Publishing is atomic (rename), but there is no transaction to hold a watermark in.
    capabilities = Capabilities(
        transactional=False, load_modes=("replace", "append"), sink_streams=True
    )
    source = FilesSource
    sink = ParquetSink
    reference = SECTIONS

    def place(self, config: ConfigModel, ctx: NamingContext) -> Place:
        if isinstance(config, FilesSource):
            patterns = (config.path,) if isinstance(config.path, str) else config.path
            system = f"files:{','.join(patterns)}"
        else:
            assert isinstance(config, ParquetSink)
            patterns, system = (config.path,), f"parquet:{config.path}"
        base = ctx.base_dir.resolve()
        return Place(system, "file", paths=tuple(str((base / path).resolve()) for path in patterns))

    def check(self, config: ConfigModel, base_dir: Path) -> list[Finding]:
        """Files not there yet, or a first file naming a column twice: warnings, since the
        data may change before the run (which fails on them, and `plan` reports them)."""
        if not isinstance(config, FilesSource):
            return []
        import glob

        from connectors.files.source import column_name_clash

        patterns = (config.path,) if isinstance(config.path, str) else config.path
        findings = []
        for pattern in patterns:
            if "{{" in pattern:
                continue
            full = Path(pattern) if Path(pattern).is_absolute() else base_dir / pattern
            if not glob.glob(str(full), recursive=True):
                findings.append(
                    Finding(
                        "no-files",
                        f"no file matches {pattern!r} yet ({full})",
                        ("path",),
                        "warning",
                    )
                )
        if findings or any("{{" in pattern for pattern in patterns):
            return findings
        clash = column_name_clash(config, base_dir)
        if clash is not None:
            findings.append(
                Finding("column-names", clash.message, ("path",), "warning", clash.hint)
            )
        return findings

    def schema(self, config: ConfigModel, ctx: ConnectorContext) -> pa.Schema | Unknown:
        """The schema the reader settles on from `columns:` and the first file (no row is
        read); unknown when there are no files yet, or a header the run would refuse."""
        from connectors.files.source import column_name_clash, open_files

        assert isinstance(config, FilesSource)
        clash = column_name_clash(config, ctx.base_dir)
        if clash is not None:
            problem = Finding("column-names", clash.message, ("path",), "error", clash.hint)
            return Unknown("its plan-time check failed", problem)
        try:
            return open_files(config, ctx)[0].schema
        except (ArrowlineError, OSError, pa.ArrowException) as exc:
            return Unknown(" ".join(str(exc).split()))

    def observe(self, config: ConfigModel, base_dir: Path) -> tuple[FileVersion, ...] | None:
        from connectors.files.source import observe_files

        assert isinstance(config, FilesSource)
        return observe_files(config, base_dir)

    def rejects(self, config: ConfigModel) -> Any:
        from connectors.rejects import Rejects

        assert isinstance(config, FilesSource)
        return Rejects(config.on_bad_row, config.max_bad_rows)

    def open(self, config: ConfigModel, ctx: ConnectorContext) -> list[pa.RecordBatchReader]:
        from connectors.files.source import open_files

        assert isinstance(config, FilesSource)
        return open_files(config, ctx)

    def copy_parts(
        self, config: ConfigModel, ctx: ConnectorContext, folder: Path, name: Callable[[int], str]
    ) -> int | None:
        from connectors.files.source import copy_parquet

        assert isinstance(config, FilesSource)
        return copy_parquet(config, ctx, folder, name)

    def write(self, table: InputTable, config: ConfigModel, ctx: ConnectorContext) -> SinkResult:
        from connectors.files.sink import write_parquet

        assert isinstance(config, ParquetSink)
        return write_parquet(table, config, ctx)


CONNECTOR = FilesConnector()
