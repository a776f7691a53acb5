"""The ``cosim`` commands: one module each, argument parsing and printing only.

Each module has ``register(sub)``, which adds its sub-parser to the ``cosim`` parser and binds
its ``run(args) -> exit code``. The work is done by the library modules of :mod:`cosim`.
"""

from cosim.commands import config, energy, gradcheck, netlist, solve, sweep, train
from cosim.commands import eval as evaluate

COMMANDS = (solve, gradcheck, train, evaluate, energy, sweep, netlist, config)
"""In the order ``cosim --help`` lists them."""

__all__ = ["COMMANDS"]
