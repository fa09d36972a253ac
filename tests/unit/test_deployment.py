"""docker-compose.yml is valid Compose (the official compose-spec schema) and the image is sane."""

import json
from importlib import resources

import jsonschema
import yaml

from ioc.settings import PROJECT_ROOT


def _compose_schema() -> dict:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text())


def test_compose_file_is_valid_compose():
    doc = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    jsonschema.validate(doc, _compose_schema())
    assert {"db", "api"} <= set(doc["services"])
    assert "postgis" in doc["services"]["db"]["image"]
    assert doc["services"]["api"]["build"]["dockerfile"] == "Dockerfile"
    assert "healthcheck" in doc["services"]["api"]


def test_schema_rejects_a_broken_compose_file():
    broken = {"services": {"api": {"image": "x", "ports": "8000:8000", "restart": ["always"]}}}
    try:
        jsonschema.validate(broken, _compose_schema())
    except jsonschema.ValidationError:
        return
    raise AssertionError("the compose schema must reject a malformed service")


def test_dockerfile_runs_as_non_root_with_healthcheck():
    text = (PROJECT_ROOT / "Dockerfile").read_text()
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text
