"""Configuration: validation against the JSON schema with defaults filled in, one-line errors."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from segdiff.core.errors import ConfigError
from segdiff.core.labels import LabelMap

__all__ = ["validate_config", "load_config", "parse_run", "coerce_strings", "check_body"]


def _with_defaults(validator_class):
    """A validator class that fills in ``default`` values of missing properties while validating."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        """The ``properties`` validator, run after setting the missing properties that have a ``default``.

        Args:
            validator: the running validator.
            properties: the schema's ``properties`` (name -> subschema).
            instance: the value being validated; when it is a dict, each missing property with a
                ``default`` is set in place (to a deep copy of the default).
            schema: the schema that holds ``properties``.

        Yields:
            The validation errors of the original ``properties`` validator.
        """
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


# YAML 1.1 spellings (Snakemake reads nested ``--config`` values with YAML's BaseLoader: all strings)
_BOOLEANS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
_NULLS = {"", "~", "null"}
_INTEGER = re.compile(r"^[-+]?[0-9](?:_?[0-9])*$")
_DIGITS = r"[0-9](?:_?[0-9])*"
_NUMBER = re.compile(rf"^[-+]?(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})(?:e[-+]?[0-9]+)?$")
_SPECIAL_FLOATS = {".inf": float("inf"), "+.inf": float("inf"), "-.inf": float("-inf"), ".nan": float("nan")}
_MISSING = object()


def _scalar(text: str, types: list[str]) -> Any:
    """``text`` as the first of ``types`` it spells, else ``_MISSING``."""
    lowered = text.strip().lower()
    if "null" in types and lowered in _NULLS:
        return None
    if "boolean" in types and lowered in _BOOLEANS:
        return _BOOLEANS[lowered]
    if ("integer" in types or "number" in types) and _INTEGER.match(lowered):
        return int(lowered.replace("_", ""))
    if "number" in types:
        if _NUMBER.match(lowered):
            return float(lowered.replace("_", ""))
        if lowered in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[lowered]
    return _MISSING


def coerce_strings(value: Any, schema: Mapping[str, Any]) -> Any:
    """``value`` with string scalars turned into the type ``schema`` expects at their location.

    Snakemake parses nested ``--config`` values (``preprocess={image_size: 64}``) with YAML's
    BaseLoader, so they arrive as strings. Strings become integer, number, boolean (YAML 1.1:
    true/false/yes/no/on/off, any case) or null where the schema wants that type and not a string;
    lists and mappings are followed through ``items``/``prefixItems`` and
    ``properties``/``additionalProperties``. A string that spells none of the wanted types is kept,
    so validation names its key. A boolean where the schema wants a string whose ``enum`` lists
    ``off`` (``on``) becomes that word: YAML 1.1 reads an unquoted ``mode: off`` as false.

    Args:
        value: a config value: a scalar, or a list or dict nested to any depth.
        schema: the JSON schema (a mapping) ``value`` is validated against; where it is not a mapping,
            ``value`` is returned as is.

    Returns:
        The converted value. Nothing is modified in place: a changed list or mapping is a new
        object, an unchanged one is returned as is.
    """
    if not isinstance(schema, Mapping):
        return value
    if isinstance(value, bool) and schema.get("type") == "string":
        # YAML 1.1 reads an unquoted off/on (``mode: off``) as a boolean: back to the word the enum lists
        word = "on" if value else "off"
        return word if word in schema.get("enum", ()) else value
    if isinstance(value, str):
        types = schema.get("type", [])
        types = [types] if isinstance(types, str) else list(types)
        if not types or "string" in types:
            return value
        coerced = _scalar(value, types)
        return value if coerced is _MISSING else coerced
    if isinstance(value, list):
        prefix = schema.get("prefixItems", [])
        items = [coerce_strings(v, prefix[i] if i < len(prefix) else schema.get("items", {})) for i, v in enumerate(value)]
        return items if any(a is not b for a, b in zip(items, value)) else value
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", {})
        changed = {}
        for key, v in value.items():
            new = coerce_strings(v, properties.get(key, extra))
            if new is not v:
                changed[key] = new
        return {**value, **changed} if changed else value
    return value


def validate_config(config: dict[str, Any], schema_path: str | Path) -> dict[str, Any]:
    """Validate ``config`` in place (filling defaults) and return it.

    String values where the schema wants another type are first converted (see
    :func:`coerce_strings`), so nested ``--config`` overrides work.

    Args:
        config: the configuration (e.g. Snakemake's config object). Converted values replace its
            top-level entries (nested values are new objects) and missing defaults are filled in.
        schema_path: the JSON schema, a YAML file.

    Returns:
        ``config`` itself, validated, with its defaults filled in.

    Raises:
        ConfigError: naming the first offending dotted key, e.g.
            ``config key 'preprocess.image_size': 'abc' is not of type 'integer'``; for an unknown key,
            the known keys at its level.
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    coerced = coerce_strings(config, schema)
    if coerced is not config:
        config.update(coerced)  # top level in place (Snakemake's config object); nested values are new objects
    error = jsonschema.exceptions.best_match(_Validator(schema).iter_errors(config))
    if error is not None:
        if error.validator == "additionalProperties":
            known = sorted(error.schema.get("properties", {}))
            raise ConfigError(_key(error), f"unknown key (known keys here: {', '.join(known)})")
        raise ConfigError(_key(error), error.message)
    return config


def load_config(path: str | Path, schema_path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config file, apply ``overrides`` (top-level keys) and validate it.

    Args:
        path: the YAML config file (an empty file is an empty config).
        schema_path: the JSON schema, a YAML file (:func:`validate_config`).
        overrides: top-level keys that replace those of the file; None for none.

    Returns:
        The validated config, with its defaults filled in.

    Raises:
        ConfigError: a file that is not valid YAML, or a config the schema rejects (:func:`validate_config`).
    """
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


def check_body(config: Mapping[str, Any], labels: LabelMap) -> None:
    """Refuse a body envelope (``preprocess.body``) the dataset cannot have, before any job.

    Args:
        config: the validated workflow config.
        labels: the study's label map (the envelope's id is its largest id + 1).

    Raises:
        ConfigError: naming ``preprocess.body.mode``: an envelope whose id does not fit the uint8 masks
            (a map with id 255), or mode ``sheet`` without a case sheet (``dataset.source`` phantom or amos).
    """
    mode = config["preprocess"]["body"]["mode"]
    if mode == "off":
        return
    if labels.body_id > 255:
        raise ConfigError("preprocess.body.mode", f"the label map's largest id is {labels.max_id}: the body id "
                                                  f"{labels.body_id} does not fit the uint8 masks")
    if mode == "sheet" and config["dataset"]["source"] != "sheet":
        raise ConfigError("preprocess.body.mode", f"sheet reads each case's body mask from the case sheet's column "
                                                  f"'body', but dataset.source is {config['dataset']['source']!r} "
                                                  "(use threshold, or off)")
