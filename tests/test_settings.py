"""Settings declared once: `tsqr serve`'s flags come from ServiceConfig's fields, so a setting
cannot exist in one place and not the other (they were declared twice and drifted: there was no
--max-body-bytes)."""

from __future__ import annotations

import argparse
import dataclasses

from tsqr_plugins.service.config import ServiceConfig
from tsqr_plugins.settings import add_arguments


def parser() -> argparse.ArgumentParser:
    built = argparse.ArgumentParser()
    add_arguments(built, ServiceConfig)
    return built


def test_every_service_setting_is_a_flag_with_its_help_and_default():
    flags = {action.option_strings[0]: action for action in parser()._actions if action.dest != "help"}
    assert {action.dest for action in flags.values()} == {field.name for field in dataclasses.fields(ServiceConfig)}
    assert "(default 8000)" in flags["--port"].help and "(default file)" in flags["--rewriter"].help
    assert flags["--rewriter"].choices == flags["--engine"].choices == ("transformers", "vllm", "openai", "file")
    # YAML and the dataclass decide otherwise; an old spelling sets nothing unless given
    assert all(action.default is None for flag, action in flags.items() if flag != "--engine")
    assert flags["--engine"].default is argparse.SUPPRESS and flags["--engine"].dest == "rewriter"


def test_flags_parse_into_a_service_config():
    args = parser().parse_args(["--rewriter", "openai", "--upstream", "http://a:1/v1", "--upstream", "http://b:1/v1",
                                "--max-wait-ms", "2.5", "--no-cache", "--max-body-bytes", "1024"])
    config = ServiceConfig.load(**vars(args))
    assert config.upstream == ["http://a:1/v1", "http://b:1/v1"] and config.max_wait_ms == 2.5
    assert config.no_cache is True and config.max_body_bytes == 1024 and config.port == 8000
    assert config.rewriter == "openai"


def test_model_options_default_to_what_the_backends_themselves_default_to():
    """One source for a local model's defaults: the flags of tsqr rewrite/proxy/eval and tsqr serve's
    settings come from ModelOptions, whose defaults are the backend classes' own."""
    import dataclasses
    import inspect

    from tsqr_plugins.backends.options import ModelOptions
    from tsqr_plugins.backends.transformers import TransformersBackend
    from tsqr_plugins.backends.vllm import AsyncVLLMBackend, VLLMBackend
    from tsqr_plugins.service import ServiceConfig

    defaults = {field.name: field.default for field in dataclasses.fields(ModelOptions)}
    for backend in (TransformersBackend, VLLMBackend, AsyncVLLMBackend):
        for name, parameter in inspect.signature(backend.__init__).parameters.items():
            if name in defaults and name != "model":
                assert parameter.default == defaults[name], (backend.__name__, name)
    service = {field.name: field.default for field in dataclasses.fields(ServiceConfig)}
    assert all(service[name] == value for name, value in defaults.items())
