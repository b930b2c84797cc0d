"""Scene representations and how to render them (no training loop here).

RENDERERS is the explicit registry: method name -> `Renderer` subclass (renderers/base.py).
Every command dispatches through it; a run saves its method's name and reads it back.
An entry is imported when first looked up, and `method_config(name)` reads a method's
config class and presets from its torch-free config module, so `splatlab train --help`
never imports a model (names of this package load on first use too, PEP 562).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, Union


@dataclass(frozen=True)
class LazyMethod:
    """A registered method not yet imported: "module:Class" of its Renderer, and its config
    module (which defines `config_class` and `PRESETS` and imports no torch)."""

    renderer: str
    config_module: str
    config_class: str


class Registry(MutableMapping):
    """name -> Renderer subclass, importing a lazily registered one on first lookup."""

    def __init__(self, entries: dict[str, Union[LazyMethod, type]]):
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> type:
        entry = self._entries[name]
        if isinstance(entry, LazyMethod):
            module, cls = entry.renderer.split(":")
            entry = getattr(importlib.import_module(module), cls)
            self._entries[name] = entry
        return entry

    def __setitem__(self, name: str, cls: type) -> None:
        self._entries[name] = cls

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:  # Mapping's would import the method
        return name in self._entries

    def config(self, name: str) -> tuple[type, dict[str, tuple[str, Any]]]:
        """(config class, presets) of a method, without importing its model when it is lazy."""
        entry = self._entries[name]
        if isinstance(entry, LazyMethod):
            module = importlib.import_module(entry.config_module)
            return getattr(module, entry.config_class), module.PRESETS
        return entry.config_cls, entry.presets


RENDERERS = Registry({
    "splat": LazyMethod("splatlab.renderers.splat.renderer:SplatRenderer", "splatlab.renderers.splat.config",
                        "SplatConfig"),
    "nerf": LazyMethod("splatlab.renderers.nerf.model:NerfRenderer", "splatlab.renderers.nerf.config",
                       "NerfConfig"),
})


class UnknownMethod(ValueError):
    """A method name that is not in RENDERERS (the message lists the choices)."""


def _check(name: str) -> None:
    if name not in RENDERERS:
        raise UnknownMethod(f"unknown method {name!r}; choose one of: {', '.join(RENDERERS)}")


def get_renderer(name: str) -> type:
    _check(name)
    return RENDERERS[name]


def method_config(name: str) -> tuple[type, dict[str, tuple[str, Any]]]:
    """(config class, presets: name -> (one-line help, config)) of a registered method."""
    _check(name)
    return RENDERERS.config(name)


_LAZY = {"SplatRenderer": "splatlab.renderers.splat.renderer",
         "NerfRenderer": "splatlab.renderers.nerf.model"}


def __getattr__(name: str):
    if name == "Renderer":
        return importlib.import_module("splatlab.renderers.base").Renderer
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["RENDERERS", "LazyMethod", "NerfRenderer", "Registry", "Renderer", "SplatRenderer", "UnknownMethod",
           "get_renderer", "method_config"]
