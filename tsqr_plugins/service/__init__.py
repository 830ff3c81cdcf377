"""The shared rewrite service (`tsqr serve`): one inference service for every host adapter."""

from tsqr_plugins.service.config import ServiceConfig

__all__ = ["ServiceConfig", "create_app"]


def create_app(config, engine=None):
    from tsqr_plugins.service.app import create_app as build

    return build(config, engine)
