"""Configuration: validation against the JSON schema with defaults filled in, one-line errors."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from segdiff.errors import ConfigError

__all__ = ["validate_config", "load_config", "parse_run"]


def _with_defaults(validator_class):
    """A validator class that fills in ``default`` values of missing properties while validating."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _key(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return ".".join(filter(None, [path, extra[0] if extra else ""]))
    return path or "<root>"


def validate_config(config: dict[str, Any], schema_path: str | Path) -> dict[str, Any]:
    """Validate ``config`` in place (filling defaults) and return it.

    Raises :class:`ConfigError` naming the first offending dotted key, e.g.
    ``config key 'preprocess.image_size': 'abc' is not of type 'integer'``.
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    error = jsonschema.exceptions.best_match(_Validator(schema).iter_errors(config))
    if error is not None:
        if error.validator == "additionalProperties":
            known = sorted(error.schema.get("properties", {}))
            raise ConfigError(_key(error), f"unknown key (known keys here: {', '.join(known)})")
        raise ConfigError(_key(error), error.message)
    return config


def load_config(path: str | Path, schema_path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config file, apply ``overrides`` (top-level keys) and validate it."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(str(path), f"not valid YAML ({err})") from err
    config.update(overrides or {})
    return validate_config(config, schema_path)


_RUN = re.compile(r"^(?:(?P<source>ct|mri)>)?(?P<modality>ct|mri)/(?P<view>axial|coronal|sagittal|all)$")


def parse_run(spec: str) -> tuple[str | None, str, str]:
    """``'ct/axial'`` -> (None, 'ct', 'axial'); ``'ct>mri/axial'`` -> ('ct', 'mri', 'axial')."""
    match = _RUN.match(spec)
    if match is None:
        raise ConfigError("run", f"{spec!r} is not modality/view or source>target/view")
    return match["source"], match["modality"], match["view"]
