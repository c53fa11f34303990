"""The searcher registry: a name -> the config class whose `run(context)` searches.

A searcher registers its config class with a decorator, as ops register
with `tf_metaprune.ops.register`:

    @registry.register("my_search")
    @dataclasses.dataclass(frozen=True)
    class MySearchConfig(_common.FrozenConfig):
      needs_pruning_net = True          # capabilities are class attributes (see FrozenConfig)
      steps: int = 10
      def run(self, context): ...

`tf_metaprune.search.run("my_search", ...)`, the binaries' `--searcher` choices
and the pipeline then know it; nothing branches on its name. The built-in
searchers register when `tf_metaprune.search` is imported, each with its
place in `SEARCHERS` (evolutionary, the default, first).
"""

_REGISTRY = {}
_ORDER = {}
SEARCHERS = ()


def register(name, config_class_=None, order=None):
  """Registers searcher `name`; as a decorator (`@register("name")`) or a call (`register("name", cls)`).

  Args:
    name: the searcher's name (`run(name, ...)`, `--searcher=name`).
    config_class_: a `FrozenConfig` dataclass with `run(context) -> SearchResult`.
    order: its place in `SEARCHERS` (and the binaries' choices); default:
      after every searcher registered before it. The built-in ones give
      theirs, so the list does not depend on which module was imported first.

  Returns:
    The class (so it decorates), or the decorator when `config_class_` is None.

  Raises:
    ValueError: if `name` is taken; TypeError: if the class has no `run`.
  """
  def add(cls):
    global SEARCHERS  # pylint: disable=global-statement
    if not isinstance(name, str) or not name:
      raise ValueError(f"searcher name {name!r} must be a non-empty string")
    if name in _REGISTRY:
      raise ValueError(f"searcher {name!r} is already registered ({_REGISTRY[name].__name__})")
    if not callable(getattr(cls, "run", None)):
      raise TypeError(f"{getattr(cls, '__name__', cls)!r} has no run(context) method; searchers are config objects "
                      "with run(context) -> SearchResult")
    _REGISTRY[name] = cls
    _ORDER[name] = (len(_ORDER) + 1000) if order is None else order
    SEARCHERS = tuple(sorted(_REGISTRY, key=_ORDER.get))
    return cls

  return add if config_class_ is None else add(config_class_)


def searcher_class(name):
  """The class whose instances run searcher `name` (`UniformConfig` for "uniform")."""
  if name not in _REGISTRY:
    raise ValueError(f"searcher {name!r} is not one of {SEARCHERS}")
  return _REGISTRY[name]


def config_class(name):
  """The config class of searcher `name` (None for a searcher without settings, e.g. "uniform")."""
  cls = searcher_class(name)
  return cls if cls.has_settings else None
