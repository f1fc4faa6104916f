"""`edgec auto`: search a hardware profile's candidates for the fastest validated artifact meeting the limits.

hardware.py reads the device profiles (core/profiles/hardware/*.json), plan.py holds the candidate order and
the pruning rules (pure), search.py runs the rounds through `edgec.compare`'s sweep and cache, report.py
writes what was decided and why, command.py is the CLI verb.
"""
from edgec.core.auto.search import AutoResult, auto, explain

__all__ = ["auto", "explain", "AutoResult"]
