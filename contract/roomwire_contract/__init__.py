"""The contract between signaling pods and the operator: what they share in Redis.

Dependency-free and pure: key names (``keys``), the inbox codec (``inbox``), signed
operator commands (``control``) and the Lua scripts both sides run (``lua``). The
operator imports nothing else of the workload, and no Redis key name is written
anywhere but here (a test checks it, Python and Lua alike).
"""
