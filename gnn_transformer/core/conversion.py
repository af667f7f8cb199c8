"""Conversion between the graph modules and their ``torch.nn`` counterparts.

Parameter names and shapes are torch's, so a conversion is a ``load_state_dict``
with ``strict=True`` -- the conversion is its own test: a missing, extra or
differently shaped tensor raises.
"""
from __future__ import annotations

from torch import nn

__all__ = ["TorchCounterpart"]


def _factory(module: nn.Module) -> dict:
    """device and dtype of a module's first parameter (empty if it has none)."""
    parameter = next(module.parameters(), None)
    return {} if parameter is None else {"device": parameter.device, "dtype": parameter.dtype}


class TorchCounterpart:
    """Mixin: ``from_torch(module)`` and ``to_torch()`` through ``state_dict`` round trips.

    A subclass sets ``torch_class`` and implements ``_config_of(module)``, returning the
    constructor arguments that rebuild ``module`` (either the torch module or the graph
    module: both expose the same attribute names).
    """

    torch_class: type[nn.Module]

    @classmethod
    def _config_of(cls, module: nn.Module) -> dict:
        raise TypeError(f"{cls.__name__} converts through its own from_torch/to_torch; it defines no _config_of")

    @classmethod
    def from_torch(cls, module: nn.Module, **options):
        """The graph module holding the same weights as the ``torch.nn`` ``module``.

        ``options`` (keyword-only extras such as ``backend``) go to the constructor.
        """
        if not isinstance(module, cls.torch_class):
            raise TypeError(
                f"{cls.__name__}.from_torch expects a {cls.torch_class.__module__}.{cls.torch_class.__name__}, "
                f"got {type(module).__name__}"
            )
        graph = cls(**cls._config_of(module), **_factory(module), **options)
        graph.load_state_dict(module.state_dict(), strict=True)
        return graph.train(module.training)

    def to_torch(self) -> nn.Module:
        """The ``torch.nn`` module holding the same weights."""
        module = self.torch_class(**self._torch_config(), **_factory(self))
        module.load_state_dict(self.state_dict(), strict=True)
        return module.train(self.training)

    def _torch_config(self) -> dict:
        return self._config_of(self)
