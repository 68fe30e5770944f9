"""A run's configuration as flat `config.*` columns: one naming for the pandas frames (`results`)
and TensorBoard's HParams (`runs.event_log`). Kept apart from `results` so that a training
process does not import pandas and the report's statistics to name its HParams."""

import json
from collections.abc import Mapping
from typing import Any

CONFIG_PREFIX = "config."


def flat_config(config: Mapping[str, Any], prefix: str = CONFIG_PREFIX) -> dict[str, Any]:
    """A nested configuration as `{"config.optimizer.learning_rate": 0.1, ...}`.

    Mappings become dotted keys; a list (or an empty mapping) becomes its JSON text, e.g.
    `config.model.hidden == "[128, 64]"`: hashable, so frames can group by it, and `json.loads`
    gives the list back. Scalars and `None` stay as they are.
    """
    flat = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            flat.update(flat_config(value, f"{prefix}{key}."))
        elif isinstance(value, (list, tuple, Mapping)):
            flat[prefix + key] = json.dumps(value)
        else:
            flat[prefix + key] = value
    return flat
