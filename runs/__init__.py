"""Runs: one agent producing one reply, and the events every watcher sees. By job:

- faces call ``sending`` (a person's message), ``stopping`` (stop, delete a conversation),
  ``tool_answers`` (a client tool's answer), ``session_state`` (resync, binding a socket);
- ``dispatch`` hands a queued run to an executor and holds the claim; ``manager`` is this process's
  executor (runs in flight, control channel, heartbeat); ``execution`` runs one of them (provider,
  ``tools``, its end, ``outcomes``) with its database steps in ``store``; ``early_start`` is a run
  asking its provider before its start has committed; ``sweeper`` finds runs whose owner died;
  ``sessions`` and ``turns`` continue and limit agent-to-agent sessions;
- ``events`` writes a conversation's events to its log, ``eventlog`` (memory or Redis).
"""
