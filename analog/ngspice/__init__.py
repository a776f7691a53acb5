"""The ngspice layer: everything that touches an ngspice process, shared by the DC solver
(:class:`analog.solvers.ngspice.NgspiceSolver`) and the transient reference (:class:`NgspiceTransient`).

* :mod:`analog.ngspice.worker`: what runs inside a worker (the shared ngspice, commands, stderr
  judgement, vectors, the ``.dc``/``.op``/``.tran`` tasks);
* :mod:`analog.ngspice.pool`: the worker processes (recycling, time limits, replacement, parent death);
* :mod:`analog.ngspice.transient`: ``.tran`` runs of a batch.

The decks themselves come from :mod:`analog.netlist`.
"""

from analog.ngspice.pool import NgspicePool
from analog.ngspice.transient import NgspiceTransient, NgspiceWaveform
from analog.ngspice.worker import RETRY_LADDER, NetlistError, NotConverged, fatal_messages, ngspice_library

__all__ = [
    "RETRY_LADDER",
    "NetlistError",
    "NgspicePool",
    "NgspiceTransient",
    "NgspiceWaveform",
    "NotConverged",
    "fatal_messages",
    "ngspice_library",
]
