"""Handlers: each orchestrates one event — observe, decide, act — and nothing else.

Contract: a handler reads the world through ``kube``/``store`` (and the pod cache kopf
fills), decides only by calling ``planning`` functions, and writes only through
``kube``/``store``. It holds no decision logic of its own beyond sequencing, translates
the operator's errors into ``kopf.TemporaryError``/``PermanentError``, and records
metrics. ``state`` holds what the operator keeps in memory between events.
"""
