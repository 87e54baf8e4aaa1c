"""Audio output of ticos-agent: the assistant's voice, barge-in flush, lip sync.

Public API (what the agent core uses):

* :class:`AudioConfig`, :func:`parse_audio_config` -- the ``[audio]`` config table
  (:mod:`ticos_agent.audio.config`);
* :class:`AudioPlayer` -- ``start()``/``stop()``, ``feed()`` deltas, ``flush()`` on barge-in,
  ``played_ms(item_id)`` for ``conversation.item.truncate``, ``health()`` for ``/health``,
  ``on_level`` for a mouth actuator (:mod:`ticos_agent.audio.player`).

Modules: ``config`` (settings), ``pcm`` (delta decoding), ``resample`` (numpy rate
conversion and volume), ``envelope`` (loudness levels and their timing), ``buffer`` (the
jitter buffer shared with PortAudio's thread), ``device`` (opening the PortAudio output),
``stream`` (the stream's life cycle: open, retry with PortAudio re-initialisation, fail,
stop), ``player`` (feed/flush, lip-sync timing, health). Importing this package
does not import sounddevice; PortAudio is loaded by ``AudioPlayer.start()``.
"""

from .config import AudioConfig, parse_audio_config


def __getattr__(name: str):
    if name == "AudioPlayer":  # numpy loads with the player, not with the config
        from .player import AudioPlayer

        return AudioPlayer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AudioConfig", "AudioPlayer", "parse_audio_config"]
