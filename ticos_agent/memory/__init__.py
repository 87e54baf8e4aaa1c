"""What the robot remembers: memory kinds, search, generation, priming, session_config.

:mod:`.model` holds the shared vocabulary (:class:`~.model.Memory`, :class:`~.model.Hit`) and
:class:`~.model.MemoryStore`, the narrow view of the store every memory part is given.

An agent loads the memory API, tools, routes and the store's memory queries when one is
first used (a call of a memory tool, a memory route, ``remember``/``recall``/``forget``), not
at start: :mod:`.router` and :mod:`.http` are what start wires.
"""

#: The memory tools' names (:mod:`.tools`), known without loading them.
NAMES = ("remember", "recall", "forget")
