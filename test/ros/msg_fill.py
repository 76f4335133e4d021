"""Fill any ROS 2 message with distinct, exactly representable values, through rosidl introspection."""
from __future__ import annotations

import importlib
import random

_SCALARS = {
    "boolean": lambda r: r.random() < 0.5,
    "octet": lambda r: bytes([r.randrange(256)]),
    "char": lambda r: r.randrange(128),
    "string": lambda r: "".join(r.choice("abcxyz éü/_") for _ in range(r.randrange(1, 12))),
    "wstring": lambda r: "".join(r.choice("abcxyz") for _ in range(5)),
    # multiples of 1/8 survive float32 exactly
    "float": lambda r: r.randrange(-8000, 8000) / 8.0,
    "double": lambda r: r.randrange(-10**6, 10**6) / 64.0,
}
for bits in (8, 16, 32, 64):
    _SCALARS[f"int{bits}"] = lambda r, b=bits: r.randrange(-(2 ** (b - 1)), 2 ** (b - 1))
    _SCALARS[f"uint{bits}"] = lambda r, b=bits: r.randrange(0, 2**b)
_SCALARS["byte"] = _SCALARS["octet"]


def message_class(type_name: str):
    """'pkg/Name' or 'pkg/msg/Name' -> class."""
    parts = type_name.split("/")
    pkg, name = parts[0], parts[-1]
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def _value(type_str: str, rng: random.Random):
    if type_str.startswith("sequence<"):
        inner = type_str[len("sequence<"):-1].split(",")[0]
        return [_value(inner, rng) for _ in range(rng.randrange(1, 4))]
    if "[" in type_str:  # fixed-size array: name[N]
        inner, size = type_str[:-1].split("[")
        return [_value(inner, rng) for _ in range(int(size))]
    if type_str in _SCALARS:
        return _SCALARS[type_str](rng)
    if type_str.startswith("string<="):
        return "bounded"
    return fill(message_class(type_str)(), rng)


def fill(msg, rng: random.Random):
    for field, type_str in msg.get_fields_and_field_types().items():
        setattr(msg, field, _value(type_str, rng))
    return msg
