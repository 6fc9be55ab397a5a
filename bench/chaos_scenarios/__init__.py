"""The chaos bench's scenarios (bench/chaos.py runs them), each trying to break the service from outside.

- `fuzz`: malformed and odd /infer traffic against `python -m service`
- `broker`: broker SIGKILLs while cameras publish events
- `crash`: the publishing process killed with the broker down and while it delivers its backlog
- `swaps`: promote and rollback under load, and versions that must never be served
- `producer` and `delivery`: what the event scenarios share, the publishing process and the count of
  what it produced against what a subscriber received
"""
