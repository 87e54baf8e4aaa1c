"""What the robot remembers: memory kinds, search, generation, priming, session_config.

:mod:`.model` holds the shared vocabulary (:class:`~.model.Memory`, :class:`~.model.Hit`) and
:class:`~.model.MemoryStore`, the narrow view of the store every memory part is given.
"""
