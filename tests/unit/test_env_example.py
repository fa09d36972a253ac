""".env.example lists every setting of every settings class with its default, and every value
it shows is one the class accepts (read the way pydantic-settings reads ``.env``)."""

from __future__ import annotations

import ast
import io
import re
from pathlib import Path

from dotenv import dotenv_values
from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

# Every module that defines a settings class (grep -rn "(BaseSettings)" ioc layers tiles api);
# test_every_settings_class_is_collected fails when one is missing here.
from ioc import settings
from ioc.addresses import registry as addresses
from ioc.maps import views as maps
from ioc.query import model as query
from tiles import settings as tile_settings

SETTINGS_MODULES = (settings, tile_settings, query, maps, addresses)
PROJECT_ROOT = settings.PROJECT_ROOT
EXAMPLE = PROJECT_ROOT / ".env.example"
PACKAGES = ("ioc", "layers", "tiles", "api")
# Variables of docker-compose.yml that no settings class reads.
COMPOSE_ONLY = ("IOC_DB_PASSWORD", "IOC_DB_USER")
# "NAME=value" or "# NAME=value" (a default left commented out).
ASSIGNMENT = re.compile(r"^(?:# ?)?([A-Z][A-Z0-9_]*)=(.*)$")


def settings_classes() -> list[type[BaseSettings]]:
    """Every BaseSettings subclass defined in ioc's packages."""
    found, todo = [], list(BaseSettings.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.split(".")[0] in PACKAGES:
            found.append(cls)
    return found


def env_names(cls: type[BaseSettings], name: str, field: FieldInfo) -> list[str]:
    """The environment names of a field, the one .env.example shows first."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    if isinstance(alias, str):
        return [alias]
    return [f"{cls.model_config.get('env_prefix', '')}{name}".upper()]


def fields() -> dict[str, tuple[type[BaseSettings], str, FieldInfo]]:
    """Environment name (the first of a field's) -> (class, field name, field)."""
    return {
        env_names(cls, name, field)[0]: (cls, name, field)
        for cls in settings_classes()
        for name, field in cls.model_fields.items()
    }


def example() -> dict[str, str]:
    """Name -> value (as a .env reader sees it) of every assignment in .env.example."""
    values = {}
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = ASSIGNMENT.match(line)
        if match:
            name = match.group(1)
            parsed = dotenv_values(stream=io.StringIO(f"{name}={match.group(2)}\n"))
            values[name] = parsed[name] or ""
    return values


def _declares_settings(node: ast.ClassDef) -> bool:
    for base in node.bases:
        if isinstance(base, ast.Name) and base.id == "BaseSettings":
            return True
        if isinstance(base, ast.Attribute) and base.attr == "BaseSettings":
            return True
    return False


def test_every_settings_class_is_collected():
    declared = set()
    for package in PACKAGES:
        for path in (PROJECT_ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            module = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
            declared |= {
                (module.removesuffix(".__init__"), node.name)
                for node in ast.walk(tree)
                if isinstance(node, ast.ClassDef) and _declares_settings(node)
            }
    collected = {(cls.__module__, cls.__name__) for cls in settings_classes()}
    missing = sorted(declared - collected)
    assert not missing, f"import these settings modules in this test: {missing}"
    assert len(collected) >= 9  # the groups known when this test was written


def test_every_setting_is_listed():
    text = EXAMPLE.read_text(encoding="utf-8")
    listed = example()
    missing = []
    for cls in settings_classes():
        for name, field in cls.model_fields.items():
            first, *others = env_names(cls, name, field)
            if first not in listed:
                missing.append(first)
            missing += [other for other in others if other not in text]
    assert not missing, f".env.example does not list {missing}"


def _same(shown: object, default: object) -> bool:
    if isinstance(default, Path) and isinstance(shown, Path) and not shown.is_absolute():
        shown = PROJECT_ROOT / shown  # the defaults are folders of the project
    return shown == default


def test_values_are_accepted_and_defaults_true(monkeypatch):
    known = fields()
    wrong = []
    for env, value in example().items():
        if env in COMPOSE_ONLY:
            continue
        cls, name, field = known[env]
        with monkeypatch.context() as env_vars:
            for other in env_names(cls, name, field):
                env_vars.delenv(other, raising=False)
            env_vars.setenv(env, value)
            shown = getattr(cls(_env_file=None), name)  # a refused value raises here
        default = field.get_default(call_default_factory=True)
        if default is not None and not _same(shown, default):
            wrong.append(f"{env}={value} is not the default {default!r}")
    assert not wrong, "; ".join(wrong)


def test_names_are_settings_or_compose_variables():
    compose = (PROJECT_ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    known = fields()
    unknown = [env for env in example() if env not in known and env not in COMPOSE_ONLY]
    assert not unknown, f".env.example lists names no settings class reads: {unknown}"
    for env in COMPOSE_ONLY:
        assert "${" + env in compose, f"{env} is no longer a variable of docker-compose.yml"
