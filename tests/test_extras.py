import tomllib

from tests.conftest import REPO
from tsqr_plugins.backends import BACKENDS, backend_class
from tsqr_plugins.errors import MissingDependencyError
from tsqr_plugins.extras import EXTRAS
from tsqr_plugins.lazy import require

PYPROJECT_EXTRAS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_every_backend_install_hint_names_an_extra_that_exists():
    for name in BACKENDS:
        cls = backend_class(name)
        if cls.EXTRA is not None:
            assert cls.EXTRA in PYPROJECT_EXTRAS, f"{name} names extra {cls.EXTRA!r}"
            assert f"pip install -e '.[{cls.EXTRA}]'" in cls.install_hint()


def test_env_knows_every_extra_of_the_package():
    assert set(EXTRAS) == set(PYPROJECT_EXTRAS) - {"dev", "all"}


def test_a_missing_dependency_names_the_extra():
    try:
        require("tsqr_no_such_module", "vllm", "the vllm backend")
    except MissingDependencyError as error:
        assert "pip install -e '.[vllm]' in the tsqr clone" in str(error) and "the vllm backend" in str(error)
    else:
        raise AssertionError("require() did not raise")
