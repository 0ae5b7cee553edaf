"""docread's own cache folder: the platform's user cache dir, moved as a whole by $DOCREAD_CACHE."""

from pathlib import Path

from docread.model.paths import APP_NAME, CACHE_ENV, cache_dir


def test_default_is_the_platform_user_cache(monkeypatch):
    from platformdirs import user_cache_dir

    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert cache_dir() == Path(user_cache_dir(APP_NAME, appauthor=False))
    assert cache_dir("quantized", "model") == cache_dir() / "quantized" / "model"


def test_env_overrides_and_create_makes_the_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    path = cache_dir("a", "b", create=True)
    assert path == tmp_path / "c" / "a" / "b" and path.is_dir()
    monkeypatch.setenv(CACHE_ENV, "  ")  # blank means unset
    assert cache_dir() != tmp_path / "c"


def test_tilde_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(CACHE_ENV, "~/dc")
    assert cache_dir() == tmp_path / "dc"
