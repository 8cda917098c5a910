"""A dbt project as it is: `dbt_project.yml` read as the project file, and the profile it names
(`profile: shop`) read from dbt's `profiles.yml` as the project's targets.

dbt keeps where models go outside the project, in a profile:

    shop:                          # profiles.yml: in --profiles-dir, else $DBT_PROFILES_DIR,
      target: dev                  # else the project's folder, else ~/.dbt
      outputs:
        dev: {type: duckdb, path: shop.duckdb, schema: main, threads: 4}
        prod:
          type: postgres
          host: db.internal
          port: 5432
          user: loader
          password: "{{ env_var('SHOP_PG_PASSWORD') }}"
          dbname: analytics
          schema: marts

A folder given by --profiles-dir or $DBT_PROFILES_DIR must be one holding profiles.yml: another
is an error, not a quiet fall back to the project's own. The target is chosen as dbt chooses it:
`--target`, else $ARROWLINE_TARGET, else $DBT_TARGET (which must name one of the profile's
outputs), else the profile's `target:`.

Each output becomes a target of the same name (`--target prod`), publishing every model into its
database: a DuckDB output's `path` (relative to the project's folder, as every path of a
pipeline is), a PostgreSQL output through a connection `dbt_<output>` made of its host, port,
user, password and dbname. `{{ env_var('NAME') }}` (with `| int` or `| as_number` too) is read
from the environment as the profile is read (its default when the variable is not set; a
per-developer `schema: "dev_{{ env_var('USER') }}"` works), except in a password, where it
becomes `${env:NAME}`, resolved when a run starts and never printed. Other templates, and
outputs of other types, are errors at their line in profiles.yml. A project that declares
`targets:` itself (or has an arrowline_project.yml) does not read profiles.yml.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.core.problems import Problem, did_you_mean
from engine.core.secrets import register_secret
from engine.core.yaml_source import SourceMap

if TYPE_CHECKING:
    from connectors.base import Connector

__all__ = [
    "DBT_PROJECT_FILE",
    "DBT_TARGET_ENV",
    "PROFILES_DIR_ENV",
    "PROFILES_DIR_OPTION_ENV",
    "profile_targets",
    "unread_files",
]

DBT_PROJECT_FILE = "dbt_project.yml"
PROFILES_DIR_ENV = "DBT_PROFILES_DIR"
PROFILES_DIR_OPTION_ENV = "ARROWLINE_PROFILES_DIR_OPTION"
"""Set (to the folder, made absolute) by the command line's `--profiles-dir`."""
DBT_TARGET_ENV = "DBT_TARGET"
_ENV_VAR = re.compile(
    r"""\{\{\s*env_var\(\s*(['"])([A-Za-z_][A-Za-z0-9_]*)\1\s*(?:,\s*(['"])(.*?)\3\s*)?\)"""
    r"""\s*(?:\|\s*(?:int|as_number|as_text|string)\s*)?\}\}"""
)
_SECRET_KEYS = {"password", "pass"}
"""Settings whose env_var() stays a reference, resolved when a run starts and never printed;
the others are read from the environment when the profile is read."""
_WHOLE = {"port", "threads", "connect_timeout"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def profile_targets(
    data: dict[str, Any],
    file: Path,
    source: SourceMap | None,
    environ: Mapping[str, str] | None = None,
) -> list[Problem]:
    """For a dbt_project.yml with `profile:` and no `targets:`: its profile's outputs put into
    `data` as `targets:` (with the profile's `target:` as the default) and the connections
    they need. What is wrong is returned, at its line."""
    name = data.get("profile")
    if file.name != DBT_PROJECT_FILE or "targets" in data or not isinstance(name, str):
        return []
    env = os.environ if environ is None else environ
    found = _profiles_file(file.parent, env)
    line = source.line_of(("profile",)) if source is not None else None
    if isinstance(found, Problem):
        return [Problem(found.code, found.message, file=str(file), line=line, hint=found.hint)]
    if found is None:
        return [
            Problem(
                "missing-file",
                f"profile {name!r}: no profiles.yml in {file.parent} or ~/.dbt, so the "
                "project has no target to publish into",
                file=str(file),
                line=line,
                hint="write the profile in profiles.yml beside dbt_project.yml (or give its "
                "folder with --profiles-dir or $DBT_PROFILES_DIR), or declare `targets:` in "
                "the project file",
            )
        ]
    from engine.core.yaml_source import read_yaml_file

    profiles, where, problems = read_yaml_file(found)
    if problems:
        return problems
    reader = _Profile(found, where, env)
    profile = profiles.get(name) if isinstance(profiles, dict) else None
    if not isinstance(profile, dict) or not isinstance(profile.get("outputs"), dict):
        return [
            Problem(
                "invalid-value",
                f"profile {name!r} is not in {found} (or has no `outputs:`)",
                file=str(file),
                line=line,
            )
        ]
    from engine.spec.targets import chosen_name

    outputs = {str(output): settings for output, settings in profile["outputs"].items()}
    default = data.get("target", reader.value((name, "target"), profile.get("target")))
    asked = chosen_name(env)[0]
    from_dbt = None if asked else env.get(DBT_TARGET_ENV) or None
    if from_dbt is not None and from_dbt not in outputs:
        reader.wrong(
            (name, "outputs"),
            f"${DBT_TARGET_ENV} names no output of profile {name!r}: {from_dbt!r} (its "
            f"outputs: {', '.join(map(repr, outputs))}).{did_you_mean(from_dbt, list(outputs))}",
        )
        return reader.problems
    default = from_dbt or default
    chosen = asked or default or next(iter(outputs), None)
    if chosen not in outputs and not asked and "target" not in data:
        reader.wrong(
            (name, "target"),
            f"profile {name!r}: target {chosen!r} is none of its outputs ({', '.join(outputs)})",
        )
        return reader.problems
    targets: dict[str, Any] = {}
    connections = data.setdefault("connections", {})
    for output, settings in outputs.items():
        before = len(reader.problems)
        made = reader.output(name, output, settings)
        if output != chosen:  # as dbt: only the output a run uses must be right
            del reader.problems[before:]
        if made is None:
            continue
        target, connection = made
        targets[output] = target
        if connection is not None:
            if f"dbt_{output}" in connections:
                reader.wrong((name, "outputs", output), f"connection 'dbt_{output}' is taken")
                continue
            connections[f"dbt_{output}"] = connection
    if reader.problems or not targets:  # said where they are, not again as a missing target
        return reader.problems
    data["targets"] = targets
    overrides = from_dbt is not None or "target" not in data  # $DBT_TARGET over the file's
    if overrides and isinstance(default, str) and default in targets:
        data["target"] = default
    return reader.problems


def _profiles_file(project: Path, env: Mapping[str, str]) -> Path | Problem | None:
    """Where dbt looks for profiles.yml, in its order: the folder the command line or the
    environment gives (which must hold one: what is wrong with it is returned), else the
    project's folder, else ~/.dbt; None when none has one."""
    for variable, said in (
        (PROFILES_DIR_OPTION_ENV, "--profiles-dir"),
        (PROFILES_DIR_ENV, f"${PROFILES_DIR_ENV}"),
    ):
        value = env.get(variable)
        if not value:
            continue
        folder = Path(value).expanduser()
        wrong = (
            "does not exist"
            if not folder.exists()
            else "is not a folder"
            if not folder.is_dir()
            else "holds no profiles.yml"
            if not (folder / "profiles.yml").is_file()
            else None
        )
        if wrong is None:
            return folder / "profiles.yml"
        return Problem(
            "missing-file",
            f"{said} {value!r} {wrong}: it names the folder of dbt's profiles.yml",
            hint=f"give the folder that holds profiles.yml, or leave {said} out to read the "
            "project's folder, then ~/.dbt",
        )
    folders = [project, Path.home() / ".dbt"]
    return next((f / "profiles.yml" for f in folders if (f / "profiles.yml").is_file()), None)


class _Profile:
    """One profiles.yml's outputs, read into targets; problems at their lines."""

    def __init__(self, file: Path, source: SourceMap | None, env: Mapping[str, str]) -> None:
        self.file, self.source, self.env = file, source, env
        self.problems: list[Problem] = []

    def wrong(self, path: tuple[Any, ...], message: str, hint: str | None = None) -> None:
        line = self.source.line_of(path) if self.source is not None else None
        self.problems.append(
            Problem("invalid-value", message, file=str(self.file), line=line, hint=hint)
        )

    def value(self, path: tuple[Any, ...], value: Any) -> Any:
        """A setting's value with `env_var()` read: from the environment now (its default when
        the variable is not set), or, for a password, as a `${env:...}` reference; None when
        it cannot be (said at its line)."""
        key, unset = str(path[-1]), []
        if (
            key in _SECRET_KEYS
            and isinstance(value, str | int | float)
            and not isinstance(value, bool)
        ):
            value = str(value)  # a password YAML reads as a number is still its text
            if "${" not in value and "{{" not in value:
                register_secret(value)  # never shown, whatever error quotes it
        elif isinstance(value, int | float) and not isinstance(value, bool) and key not in _WHOLE:
            return str(value)  # dbt renders every setting as text: a user or dbname too
        if not isinstance(value, str) or ("{{" not in value and "{%" not in value):
            return value

        def read(match: re.Match[str]) -> str:
            variable, default = match.group(2), match.group(4)
            if key in _SECRET_KEYS and (variable in self.env or default is None):
                return f"${{env:{variable}}}"
            if variable in self.env:
                return self.env[variable]
            if default is None:
                unset.append(variable)
            return default or ""

        made = _ENV_VAR.sub(read, value)
        if "{{" in made or "{%" in made:
            self.wrong(
                path,
                f"{key}: only {{{{ env_var('NAME') }}}} is read in profiles.yml; this is "
                "another template",
                hint="give the value, or env_var('NAME') for one from the environment",
            )
            return None
        if unset:
            self.wrong(path, f"{key}: environment variable {unset[0]} is not set (no default)")
            return None
        return int(made) if key in _WHOLE and made.strip().isdigit() else made

    def output(
        self, profile: str, name: str, settings: Any
    ) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """(target, connection or None) of one output, read by the connector of its type."""
        at = (profile, "outputs", name)
        if not isinstance(settings, dict):
            self.wrong(at, f"output {name!r} must be a mapping of settings")
            return None
        values = {k: self.value((*at, k), v) for k, v in settings.items()}
        if any(v is None for k, v in values.items() if settings.get(k) is not None):
            return None
        kind = settings.get("type")
        owner = _reader(kind)
        made = owner.profile_output(values, f"dbt_{name}") if owner is not None else None
        if made is None:
            self.wrong(
                (*at, "type"),
                f"output {name!r} is of type {kind!r}: arrowline publishes into "
                f"{' or '.join(_readers())}",
            )
            return None
        for key, message in made.problems:
            self.wrong((*at, key) if key else at, f"output {name!r}: {message}")
        if made.problems or made.target is None:
            return None
        if made.connection is not None and not _NAME.fullmatch(name):
            self.wrong(at, f"output {name!r}: its connection would be dbt_{name}, not a name")
            return None
        target = {k: v for k, v in made.target.items() if v is not None}
        if values.get("threads") is not None:
            target["threads"] = values["threads"]
        return target, made.connection


def _reader(kind: Any) -> Connector | None:
    """The connector a dbt output's `type` names (whether it reads profiles' outputs, its
    `profile_output` says)."""
    from connectors.registry import connectors

    return next((c for c in connectors() if c.name == kind), None)


def _readers() -> list[str]:
    """The connectors that read dbt profiles' outputs (their `type`)."""
    from connectors.registry import connectors

    return [c.name for c in connectors() if c.profile_output({}, "") is not None]


def unread_files(file: Path) -> list[Problem]:
    """What a dbt project's folder holds that arrowline does not read, said rather than
    silently left: packages (their macros, dbt_utils' among them, are not there) and
    snapshots (not run)."""
    folder, found = file.parent, []
    for name in ("packages.yml", "dependencies.yml"):
        if (folder / name).is_file():
            message = f"{name}: packages are not read, so their macros are not callable here"
            found.append(Problem("not-supported", message, "warning", str(folder / name), 1))
    snapshots = folder / "snapshots"
    if snapshots.is_dir() and any(snapshots.rglob("*.sql")):
        message = "snapshots/: dbt snapshots are not run (an incremental model or CDC instead)"
        found.append(Problem("not-supported", message, "warning", str(snapshots), None))
    return found
