# ruff: noqa: W293, SIM108, UP015  (ticos-client's code, kept verbatim)
"""ticos-client 0.7.2's own session_config writer, verbatim, to compare ours against.

The two methods below are copied unchanged from ``ticos_client/ticos_client.py`` of the
``ticos-client`` 0.7.2 wheel (Apache License 2.0): ``TicosClient.update_session_config_messages``
and ``TicosClient._update_session_config_file``. ``test_session_config.py`` checks they still
equal the installed or unpacked ticos-client source when one is found (``/tmp/tcsrc`` or
``import ticos_client``). The surrounding class gives them what they use: ``self.storage``
(``get_messages(offset, limit, desc)``, newest first) and ``self.context_rounds``.
"""

from __future__ import annotations

import json
import logging
from enum import Enum
from pathlib import Path

logger = logging.getLogger("ticos_client.ticos_client")


class MessageRole(str, Enum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


class Message:
    def __init__(self, role: str, content: str):
        self.role = MessageRole(role)
        self.content = content


class Storage:
    """ticos-client's storage view: ``get_messages(0, n, True)`` gives the newest n, newest first."""

    def __init__(self, rows: list[dict]):
        self.rows = [Message(r["role"], r["content"]) for r in rows]  # oldest first

    def get_messages(self, offset: int = 0, limit: int = 10, desc: bool = True) -> list[Message]:
        rows = self.rows[::-1] if desc else self.rows
        return rows[offset:offset + limit]


class TicosClientWriter:
    def __init__(self, rows: list[dict], context_rounds: int = 12):
        self.storage = Storage(rows)
        self.context_rounds = context_rounds

    def update_session_config_messages(self):
        """
        Update the session_config file with the latest conversation messages.
        This ensures that the agent has context when restarted.
        """
        if not self.storage:
            logger.warning(
                "Cannot update session_config messages: storage not initialized"
            )
            return

        try:

            # Get the latest messages
            messages = self.storage.get_messages(0, self.context_rounds, True)

            # Prepare message list for session_config
            session_messages = []

            # Add conversation messages
            message_count = 0

            for message in reversed(messages):

                try:
                    # Extract content from message
                    content = ""
                    msg_content = message.content

                    if isinstance(msg_content, str):
                        content = msg_content
                    else:
                        content = str(msg_content)

                    if content:
                        session_messages.append(
                            {"role": message.role.value, "content": content}
                        )
                        message_count += 1

                except Exception as e:
                    logger.warning(f"Error processing message for session_config: {e}")

            # Ensure the last message is from assistant
            while session_messages and session_messages[-1]["role"] != "assistant":
                session_messages.pop()

            # Update session_config file
            self._update_session_config_file(session_messages)

        except Exception as e:
            logger.error(f"Error updating session_config messages: {e}")

    def _update_session_config_file(self, messages):
        """
        Update the session_config file with the provided messages.
        Uses a safe write approach (write to temp file, then rename).

        Args:
            messages: List of message objects to write to the session_config
        """
        try:
            # Path to session_config
            session_config_path = Path.home() / ".config" / "ticos" / "session_config"

            # Read current session_config
            if not session_config_path.exists():
                logger.warning(f"Session config file not found: {session_config_path}")
                return

            with open(session_config_path, "r") as f:
                session_config = json.load(f)

            # Update messages under model.messages.nobody
            if "model" not in session_config:
                session_config["model"] = {}
                
            # If messages is a list, convert to dict format with 'nobody' key
            if "messages" not in session_config["model"] or isinstance(session_config["model"]["messages"], list):
                session_config["model"]["messages"] = {"nobody": messages}
            else:
                # It's already a dict, update the 'nobody' key
                session_config["model"]["messages"]["nobody"] = messages

            # Write to temporary file
            temp_path = session_config_path.with_suffix(".tmp")
            with open(temp_path, "w") as f:
                json.dump(session_config, f, indent=2, ensure_ascii=False)

            # Rename to overwrite original
            temp_path.replace(session_config_path)
            logger.debug(f"Updated session_config with {len(messages)} messages")

        except Exception as e:
            logger.error(f"Error writing session_config file: {e}")
