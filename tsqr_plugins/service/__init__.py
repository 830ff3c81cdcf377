"""The shared rewrite service (`tsqr serve`): one inference service for every host adapter."""

from tsqr_plugins.service.config import ServiceConfig

__all__ = ["ServiceConfig", "create_app"]


def create_app(config, backend=None, *, engine=None):
    """The service's Starlette application.

    Args:
        config: The service's settings (:class:`ServiceConfig`).
        backend: The backend to serve; None: the one ``config.rewriter`` names.
        engine: The old name of ``backend``, kept for one release with a warning.
    """
    from tsqr_plugins.service.app import create_app as build
    from tsqr_plugins.settings import renamed_keyword

    return build(config, renamed_keyword("create_app", "backend", backend, "engine", engine))
