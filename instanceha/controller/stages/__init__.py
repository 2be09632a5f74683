"""The recovery stages, one module each, in the order a failed host meets them.

1. ``plan``     read-only: the host's servers, their policy facts and the
                engine's decision for each; started the moment the fence starts
2. ``fence``    power-off read back (or an operator's attestation) -> force-down,
                marked FENCED
3. ``recover``  right after the force-down (same job, the plan ready): evacuate or
                notify each instance, then marked RECOVERED
4. ``reenable`` once repaired: forced-down unset, then enabled when Nova sees it up
5. ``hold``     came back mid-recovery, flapping, unreadable marker: HELD

``pipeline.fence_then_recover`` chains 1-3 for a host that just failed; a later
tick (a new leader) enters at 3 from the durable marker. The tick and the
dispatch live in ``instanceha.controller.recovery``.
"""
