"""Pure planning: decisions as functions of observed state. No I/O, ever.

Contract: every module here only manipulates data. It imports neither kopf, kubernetes,
redis nor aiohttp, reads no clock and no environment, and draws randomness only from a
``random.Random`` handed to it. Inputs are plain typed values (what the operator
observed); outputs are typed plans (what it should do). The handlers observe, call a
planner, and hand the plan to the I/O modules. Checked by import-linter.

- ``hashing``: stable 64-bit hashes (Python's ``hash`` is salted per process).
- ``placement``: each room's home pod, by sticky bounded-load consistent hashing.
- ``scaling``: desired replicas (demand + spare buffer, clamped, stabilised on the way
  down) and the scale-down steps (drain the emptiest pods first, then scale).
- ``weights``: one weight per pod from live connection counts, and the ``accepting``
  flag with hysteresis; every publisher (pod label, annotation, Nacos) reads this.
- ``rebalance``: skew, balance targets, the fewest moves that fix skew (whole rooms
  first, then single sessions) and their paced, jittered schedule.
- ``status``: MeetingRoom status and standard conditions.
"""
