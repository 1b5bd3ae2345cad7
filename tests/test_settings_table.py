"""The settings table (remote_kernel/settings.py) and everything derived from it agree.

Each setting is declared once; these tests fail when one of its other faces (the README's tables,
the pool's flags, the typed `PoolSettings`, the kernel's `KernelConfig`, the embedded pool's command
line, the language table) is edited without the table.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from remote_kernel.cli import LANGUAGE_KEYS, build_parser
from remote_kernel.kernel.config import KernelConfig
from remote_kernel.kernel.embedded import EmbeddedPool
from remote_kernel.kernel.languages import LANGUAGES
from remote_kernel.settings import (
    CONTAINER_TYPES,
    EMBEDDED_SETTINGS,
    KERNEL_SETTINGS,
    POOL_SETTINGS,
    SETTINGS,
    PoolSettings,
    markdown_rows,
)

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_rows() -> list[str]:
    """The rows of the README's tables whose first cell is an environment variable."""
    return [line for line in README.read_text(encoding="utf-8").splitlines()
            if line.startswith("| `") and line.split("`")[1].startswith(("REMOTE_KERNEL_", "POOL_MANAGEMENT_"))]


def test_the_readme_tables_say_what_the_settings_table_says():
    """Every variable is in both, with the same meaning and default (`python -m remote_kernel.settings` prints
    the tables to paste)."""
    expected = markdown_rows(["kernel"]) + markdown_rows(["both"])
    shown = [row for row in readme_rows() if row.split("`")[1] in {s.variable for s in SETTINGS}]
    assert shown == expected
    documented = {row.split("`")[1] for row in readme_rows()}
    assert {s.variable for s in SETTINGS if s.variable} <= documented


def test_names_are_unique():
    variables = [s.variable for s in SETTINGS if s.variable]
    flags = [s.flag for s in SETTINGS if s.flag]
    assert len(variables) == len(set(variables)) and len(flags) == len(set(flags))
    assert all(s.variable for s in SETTINGS if s.scope in ("kernel", "both"))
    assert all(s.flag for s in SETTINGS if s.scope in ("pool", "both"))


def test_the_pool_runs_with_one_typed_field_per_pool_setting_at_the_tables_default():
    assert [f.name for f in dataclasses.fields(PoolSettings)] == [s.key for s in POOL_SETTINGS]
    parsed = PoolSettings.from_arguments(build_parser().parse_args(["pool"]))
    assert parsed == PoolSettings.defaults()


def test_the_kernel_config_has_each_kernel_setting_at_the_tables_default():
    names = {f.name for f in dataclasses.fields(KernelConfig)}
    assert {s.key for s in KERNEL_SETTINGS} <= names
    config = KernelConfig.from_env({})
    for row in KERNEL_SETTINGS:
        if row.default is not None:  # None: derived where it is read (auth mode, identifier) or absent
            assert getattr(config, row.key) == row.default, row.variable


@pytest.mark.parametrize("env", [
    {"REMOTE_KERNEL_MEMORY": "300m", "REMOTE_KERNEL_DISK": "2048M", "REMOTE_KERNEL_EGRESS": "ALLOW=pypi.org",
     "REMOTE_KERNEL_SANDBOX": "None", "REMOTE_KERNEL_PYTHON": "/opt/py/bin/python", "REMOTE_KERNEL_TIMEOUT": "900"},
    {"REMOTE_KERNEL_EGRESS": "Enabled", "REMOTE_KERNEL_TIMEOUT": "30"},
])
def test_the_kernels_settings_reach_its_embedded_pool_as_the_pool_reads_them(env):
    """What the kernel reads from a variable is what the pool reads from the flag the kernel passes."""
    config = KernelConfig.from_env(env)
    assert not config.problems
    pool = EmbeddedPool("PythonLTS", options=config.pool_args())
    try:
        argv = pool.argv
    finally:
        pool.stop()
    assert argv[1:4] == ["-m", "remote_kernel", "pool"]
    settings = PoolSettings.from_arguments(build_parser().parse_args(argv[3:]))
    for name, row in EMBEDDED_SETTINGS.items():
        expected = row.parse(env[name].strip()) if name in env else row.default
        assert getattr(settings, row.key) == expected, name
    timeout = float(env["REMOTE_KERNEL_TIMEOUT"])
    assert settings.max_execution_time == (timeout if timeout > 220 else None)
    assert settings.mcp == "off" and settings.cooldown == pool.cooldown


def test_the_command_lines_choices_are_the_language_tables():
    assert LANGUAGE_KEYS == tuple(LANGUAGES)
    assert {language.container_type for language in LANGUAGES.values()} <= set(CONTAINER_TYPES)
    from remote_kernel.pool import runtimes  # the pool's own table: what each container type runs
    assert set(CONTAINER_TYPES) == set(runtimes.CONTAINER_TYPES)


@pytest.mark.parametrize("raw", ["infG", "1e400K"])
def test_a_size_no_integer_holds_is_a_problem_not_a_crash(raw):
    """Reading the kernel's settings never raises (the first cell names what to fix); the pool's
    command line refuses the flag with its usage, not a traceback."""
    config = KernelConfig.from_env({"REMOTE_KERNEL_MEMORY": raw, "REMOTE_KERNEL_DOWNLOAD_LIMIT": raw})
    assert [problem.split("=")[0] for problem in config.problems] == ["REMOTE_KERNEL_DOWNLOAD_LIMIT",
                                                                       "REMOTE_KERNEL_MEMORY"]
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["pool", "--memory", raw])
    assert stopped.value.code == 2
