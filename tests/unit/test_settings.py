"""Settings come from the environment with the IOC_ prefix; DATABASE_URL wins."""

from pathlib import Path

from ioc.settings import DatabaseSettings, DataSettings, ServerSettings


def test_managed_cluster_by_default(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("IOC_PG_PORT", "55555")
    monkeypatch.setenv("IOC_PG_DIR", "/srv/ioc/pg")
    settings = DatabaseSettings()
    assert settings.managed
    # ioc's own role, never the superuser (docs/security.md); the superuser for set-up only.
    assert settings.dsn() == "postgresql://ioc@/ioc?host=/srv/ioc/pg/run&port=55555"
    assert settings.dsn("other").startswith("postgresql://ioc@/other?")
    assert settings.superuser_dsn("postgres").startswith("postgresql://postgres@/postgres?")


def test_database_url_points_at_existing_postgis(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/city?sslmode=require")
    settings = DatabaseSettings()
    assert not settings.managed
    assert settings.dsn() == "postgresql://u:p@db:5432/city?sslmode=require"
    assert settings.dsn("ioc_test") == "postgresql://u:p@db:5432/ioc_test?sslmode=require"


def test_server_settings_validated(monkeypatch):
    monkeypatch.setenv("IOC_PORT", "70000")
    try:
        ServerSettings()
    except ValueError as exc:
        assert "port" in str(exc)
    else:
        raise AssertionError("an out-of-range port must be refused")


def test_empty_data_dir_means_none(monkeypatch):
    monkeypatch.setenv("IOC_DATA_DIR", "")
    assert DataSettings().data_dir is None
    monkeypatch.setenv("IOC_DATA_DIR", "/data/hcmc")
    assert DataSettings().data_dir == Path("/data/hcmc")
