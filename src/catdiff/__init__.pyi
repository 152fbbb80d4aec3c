# Types of the names catdiff/__init__.py resolves lazily (PEP 562), for type checkers and IDEs.
from .conditioning import Condition as Condition
from .config import load_config as load_config
from .pipeline import load as load
from .trainer import train as train

__all__ = ["Condition", "__version__", "load", "load_config", "train"]
__version__: str
