"""Generated rows: deterministic synthetic data with typed columns, NULLs and value ranges, for
demos, tests and benchmarks. No file, no server: the config is the data."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from connectors.base import Capabilities, Connector, ConnectorContext, NamingContext, Unknown
from connectors.generate.config import GenerateSource
from connectors.generate.reference import SECTIONS
from engine.core.config import ConfigModel
from engine.core.files import FileVersion
from engine.core.places import Place
from engine.core.problems import Finding

__all__ = ["CONNECTOR", "GenerateConnector"]


class GenerateConnector(Connector):
    name = "generate"
    capabilities = Capabilities(transactional=False)
    source = GenerateSource
    reference = SECTIONS

    def place(self, config: ConfigModel, ctx: NamingContext) -> Place:
        assert isinstance(config, GenerateSource)
        # synthetic rows come from no dataset: lineage shows the seed, OpenLineage no input
        return Place(f"generate:seed={config.seed}", "generate")

    def check(self, config: ConfigModel, base_dir: Path) -> list[Finding]:
        """Specs a column's type cannot take (a sequence of strings, values that are not
        dates), found without drawing a row."""
        from connectors.generate.source import column_problems

        assert isinstance(config, GenerateSource)
        return [
            Finding("generate-column", message, ("columns", name))
            for name, message in column_problems(config)
        ]

    def schema(self, config: ConfigModel, ctx: ConnectorContext) -> pa.Schema | Unknown:
        from connectors.generate.source import generate_schema

        assert isinstance(config, GenerateSource)
        return generate_schema(config)

    def observe(self, config: ConfigModel, base_dir: Path) -> tuple[FileVersion, ...] | None:
        return ()  # the config is the data: nothing outside it can change what is read

    def open(self, config: ConfigModel, ctx: ConnectorContext) -> list[pa.RecordBatchReader]:
        from connectors.generate.source import open_generate

        assert isinstance(config, GenerateSource)
        return open_generate(config, ctx)


CONNECTOR = GenerateConnector()
