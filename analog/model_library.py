"""Reading a SPICE model library: a whitelist parser that validates a file before any of it reaches ngspice.

A model library file holds ``.model`` cards (e.g. the neuron diode) and ``.subckt`` definitions
(e.g. a neuron nonlinearity with one pin, the neuron node). It is read by a whitelist parser, never
passed through: every statement must parse as what it should be, and the deck receives the
*re-printed* statements, so comments, control blocks or anything the parser did not understand
never reach ngspice's control language. Refused, with the file and line:

* ``.control`` / ``.endc``, the word ``shell``, backquotes, non-ASCII or control characters
  (anywhere, comments included);
* any dot statement but ``.model``, ``.subckt``/``.ends`` and ``.include``/``.lib`` (no
  ``.options``, analyses, ``.param``, ...), and element lines outside a ``.subckt``;
* ``.include`` / ``.lib`` of a path outside the model file's folder (symbolic links resolved);
  included files are validated the same way and inlined;
* identifiers, node names and values that do not parse (a value is a number with an optional SPICE
  scale suffix, or a ``{...}`` expression of numbers, names and arithmetic); numbers that are not
  finite (``1e999``); resistors of zero or negative ohms; ``.model`` cards whose parentheses do not
  balance;
* anything but a regular file (a FIFO would block the reader, a device would never end), a file
  larger than ``MAX_BYTES`` or a library whose files, includes counted each time, exceed
  ``MAX_TOTAL_BYTES`` (checked on the size before reading);
* a subcircuit that instantiates itself, directly or through others, or that flattens to more
  than ``MAX_EXPANDED_ELEMENTS`` element lines (``A`` holding ten ``B`` holding ten ``C`` ... grows
  tenfold a level; ngspice would build every copy). Counted on the definitions, nothing expanded.

What it yields is :class:`analog.models.ModelLibrary`.
"""

from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path

from analog.models import ModelCard, ModelFileError, ModelLibrary, SubCircuit, is_number, number

__all__ = ["MAX_BYTES", "MAX_EXPANDED_ELEMENTS", "MAX_INCLUDE_DEPTH", "MAX_TOTAL_BYTES", "load_model_library"]

MAX_BYTES = 1_000_000
"""Largest model file (each file of a library), bytes."""
MAX_TOTAL_BYTES = 4_000_000
"""Largest library, all its files together, an included file counted each time it is included
(a file including another many times, nested, would otherwise read without end)."""
MAX_INCLUDE_DEPTH = 8
MAX_EXPANDED_ELEMENTS = 10_000
"""Most element lines one subcircuit may flatten to, its nested subcircuits' copies included."""

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_]{0,63}\Z")
"""A model or subcircuit name: SPICE lets it start with a digit (``1N4148``)."""
_NODE = re.compile(r"[A-Za-z0-9_]{1,64}\Z")
_EXPRESSION = re.compile(r"\{[A-Za-z0-9_+\-*/().,<>=!&|?: ^]{1,500}\}\Z")
_FORBIDDEN = (
    (re.compile(r"\.control\b|\.endc\b", re.IGNORECASE), "ngspice control blocks (.control/.endc)"),
    (re.compile(r"\bshell\b", re.IGNORECASE), "the word 'shell'"),
    (re.compile(r"`"), "backquotes"),
)
_CONTROL = re.compile(r"[^\t\n\r\x20-\x7e]")
"""Anything but printable ASCII, tab and line ends (the text is ASCII-decoded already)."""
_MODEL_TYPES = {"D", "R", "C", "NPN", "PNP", "NMOS", "PMOS", "NJF", "PJF", "SW"}


def _instantiated(line: str) -> str:
    """The subcircuit an ``X`` line (as re-printed by the parser) instantiates, lower case."""
    return next(a for a in reversed(line.split()[1:]) if "=" not in a).lower()


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


class _Parser:
    def __init__(self, root: Path):
        self.root = root.resolve()
        self.models: dict[str, ModelCard] = {}
        self.subcircuits: dict[str, SubCircuit] = {}
        self.defined_at: dict[str, str] = {}
        """``file:line`` of each subcircuit's ``.subckt``, by lower-case name."""
        self.stack: list[Path] = []
        self.total_bytes = 0

    def fail(self, where: str, message: str):
        raise ModelFileError(f"model file {where}: {message}")

    def read(self, path: Path, where: str) -> str:
        # Size and type come from stat before anything is read: a sparse 3 GB file, /dev/zero or a
        # FIFO (which would block open() and read() forever) are refused without touching them.
        try:
            info = os.stat(path)
        except OSError as exc:
            self.fail(where, f"cannot read {path}: {exc.strerror or exc}")
        if not stat.S_ISREG(info.st_mode):
            self.fail(
                where, f"{path} is {_file_kind(info.st_mode)}, not a regular file; give a plain text model library"
            )
        self.check_size(where, path, info.st_size)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            self.fail(where, f"cannot read {path}: {exc.strerror or exc}")
        with open(fd, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if not stat.S_ISREG(mode):  # swapped since the stat
                self.fail(where, f"{path} is {_file_kind(mode)}, not a regular file; give a plain text model library")
            os.set_blocking(fh.fileno(), True)
            data = fh.read(MAX_BYTES + 1)
        if len(data) > info.st_size:  # it grew since the stat
            self.check_size(where, path, len(data), counted=info.st_size)
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            self.fail(where, f"{path} is not plain ASCII text")
        bad = _CONTROL.search(text)
        if bad is not None:
            self.fail(where, f"{path} contains the control character {bad.group()!r}")
        return text

    def check_size(self, where: str, path: Path, size: int, counted: int = 0) -> None:
        """Count ``size`` bytes of ``path`` (``counted`` of them already) towards the library;
        refuse them past the limits."""
        if size > MAX_BYTES:
            self.fail(
                where,
                f"{path} is {size} bytes, more than the {MAX_BYTES} a model file may have; keep only the "
                "models the circuit uses (vendor libraries can be cut to the needed .model/.subckt cards)",
            )
        self.total_bytes += size - counted
        if self.total_bytes > MAX_TOTAL_BYTES:
            self.fail(
                where,
                f"the library with its includes (each counted every time it is included) exceeds "
                f"{MAX_TOTAL_BYTES} bytes at {path}; include each file once",
            )

    def parse_file(self, path: Path, where: str) -> None:
        resolved = path.resolve()
        if resolved in self.stack:
            self.fail(where, f"{path} includes itself (include cycle)")
        if len(self.stack) >= MAX_INCLUDE_DEPTH:
            self.fail(where, f"includes nested deeper than {MAX_INCLUDE_DEPTH}")
        self.stack.append(resolved)
        self.parse_text(self.read(path, where), str(path))
        self.stack.pop()

    def statements(self, text: str, source: str) -> list[tuple[str, list[str]]]:
        """``(where, tokens)`` per statement: comments dropped, ``+`` continuations joined."""
        out: list[tuple[str, list[str]]] = []
        card_where: str | None = None
        depth = 0
        """Line and parenthesis depth of the open ``.model`` card (``None``: none open)."""

        def close_card() -> None:
            nonlocal card_where
            if card_where is not None and depth:
                self.fail(card_where, f"unbalanced parentheses in the .model card: {depth} '(' never closed")
            card_where = None

        def count_parens(where: str, line: str) -> None:
            nonlocal depth
            for char in line:
                depth += {"(": 1, ")": -1}.get(char, 0)
                if depth < 0:
                    self.fail(where, "unbalanced parentheses in the .model card: ')' without a '(' before it")

        # Searched in the whole text first: per line only when one is there, to name its line.
        forbidden = [(pattern, what) for pattern, what in _FORBIDDEN if pattern.search(text)]
        for number_, raw in enumerate(text.splitlines(), 1):
            where = f"{source}:{number_}"
            for pattern, what in forbidden:
                if pattern.search(raw):
                    self.fail(where, f"{what} are not allowed in a model file")
            line = raw.split(";", 1)[0].strip()
            if not line or line.startswith("*"):
                continue
            # "k = v" and "k= v" become one token; parentheses of model cards are punctuation.
            line = re.sub(r"\s*=\s*", "=", line)
            if line.startswith("+"):
                if not out:
                    self.fail(where, "a continuation line (+) with nothing to continue")
                more = line[1:]
                if out[-1][1][0].lower() == ".model":
                    count_parens(where, more)
                    more = more.replace("(", " ").replace(")", " ")
                out[-1][1].extend(more.split())
                continue
            close_card()
            if line.lower().startswith(".model"):
                card_where, depth = where, 0
                count_parens(where, line)
                line = line.replace("(", " ").replace(")", " ")
            out.append((where, line.split()))
        close_card()
        return out

    def parse_text(self, text: str, source: str) -> None:
        open_sub: tuple[str, str, list[str], list[tuple[str, str]], list[str]] | None = None
        for where, tokens in self.statements(text, source):
            head = tokens[0].lower()
            if head == ".model":
                self.model(where, tokens)
            elif head == ".subckt":
                if open_sub is not None:
                    self.fail(where, f"nested .subckt inside {open_sub[1]} (close it with .ends first)")
                open_sub = (where, *self.subckt_head(where, tokens), [])
            elif head == ".ends":
                if open_sub is None:
                    self.fail(where, ".ends without .subckt")
                _, name, pins, params, body = open_sub
                if len(tokens) > 2 or (len(tokens) == 2 and tokens[1].lower() != name.lower()):
                    self.fail(where, f".ends {' '.join(tokens[1:])} does not close .subckt {name}")
                if not body:
                    self.fail(where, f".subckt {name} is empty")
                self.define(where, self.subcircuits, name, SubCircuit(name, tuple(pins), tuple(params), tuple(body)))
                self.defined_at[name.lower()] = open_sub[0]
                open_sub = None
            elif head in (".include", ".inc", ".lib"):
                if open_sub is not None:
                    self.fail(where, f"{tokens[0]} inside .subckt {open_sub[1]}")
                self.include(where, tokens)
            elif head.startswith("."):
                self.fail(where, f"{tokens[0]} is not allowed (only .model, .subckt/.ends, .include/.lib)")
            elif open_sub is None:
                self.fail(where, f"element {tokens[0]} outside a .subckt (a model file only defines models)")
            else:
                open_sub[4].append(self.element(where, tokens))
        if open_sub is not None:
            self.fail(open_sub[0], f".subckt {open_sub[1]} is never closed with .ends")

    def define(self, where: str, table: dict, name: str, value) -> None:
        if name.lower() in table:
            self.fail(where, f"{name} is defined twice")
        table[name.lower()] = value

    def ident(self, where: str, token: str, what: str) -> str:
        if not _IDENT.match(token):
            self.fail(where, f"{what} {token!r} is not an identifier (letters, digits, _; at most 64)")
        return token

    def name(self, where: str, token: str, what: str) -> str:
        if not _NAME.match(token):
            self.fail(where, f"{what} {token!r} is not a model name (letters, digits, _; at most 64)")
        return token

    def node(self, where: str, token: str) -> str:
        if not _NODE.match(token):
            self.fail(where, f"node name {token!r} is not valid (letters, digits, _; at most 64)")
        return token

    def value(self, where: str, token: str, what: str) -> str:
        if is_number(token):
            if not math.isfinite(number(token)):
                self.fail(where, f"{what} {token!r} is not a finite number (it overflows a float); give its real value")
            return token
        if _EXPRESSION.match(token):
            return token
        self.fail(where, f"{what} {token!r} is not a number (e.g. 1e-14, 2.2k) or a {{expression}}")

    def pairs(self, where: str, tokens: list[str], what: str) -> list[tuple[str, str]]:
        out = []
        for token in tokens:
            key, sep, value = token.partition("=")
            if not sep:
                self.fail(where, f"{what}: expected KEY=VALUE, got {token!r}")
            out.append((self.ident(where, key, f"{what} key").upper(), self.value(where, value, f"{what} {key}")))
        return out

    def model(self, where: str, tokens: list[str]) -> None:
        if len(tokens) < 3:
            self.fail(where, ".model needs a name and a type, e.g. .model DFAST D (IS=1e-14 N=1.05)")
        name = self.name(where, tokens[1], ".model name")
        kind = tokens[2].upper()
        if kind not in _MODEL_TYPES:
            self.fail(where, f".model {name}: type {tokens[2]!r} is not one of {sorted(_MODEL_TYPES)}")
        params = self.pairs(where, tokens[3:], f".model {name}")
        for key, value in params:
            if not is_number(value):
                self.fail(where, f".model {name}: {key}={value!r} must be a number")
        self.define(where, self.models, name, ModelCard(name, kind, tuple(params)))

    def subckt_head(self, where: str, tokens: list[str]):
        if len(tokens) < 3:
            self.fail(where, ".subckt needs a name and at least one pin, e.g. .subckt NEURON n")
        name = self.name(where, tokens[1], ".subckt name")
        rest = tokens[2:]
        cut = next((i for i, t in enumerate(rest) if t.lower() == "params:" or "=" in t), len(rest))
        pins = [self.node(where, t) for t in rest[:cut]]
        if not pins:
            self.fail(where, f".subckt {name} has no pins")
        if len(set(p.lower() for p in pins)) != len(pins):
            self.fail(where, f".subckt {name} repeats a pin")
        tail = rest[cut:]
        if tail and tail[0].lower() == "params:":
            tail = tail[1:]
        return name, pins, self.pairs(where, tail, f".subckt {name} params")

    def element(self, where: str, tokens: list[str]) -> str:
        name = self.ident(where, tokens[0], "element name")
        kind = name[0].upper()
        args = tokens[1:]

        def need(count: int, form: str) -> None:
            if len(args) < count:
                self.fail(where, f"{name}: expected {form}")

        if kind in "RCL":
            need(3, f"{kind}name n1 n2 value")
            out = [self.node(where, a) for a in args[:2]] + [self.value(where, args[2], f"{name} value")]
            if kind == "R" and is_number(args[2]) and number(args[2]) <= 0:
                self.fail(
                    where,
                    f"{name}: resistance {args[2]} ohm is not positive; a resistor needs a value above 0 "
                    "(for a short, join the nodes; a negative resistance is not a passive device)",
                )
            out += [f"{k}={v}" for k, v in self.pairs(where, args[3:], name)]
        elif kind == "D":
            need(3, "Dname anode cathode model")
            out = [self.node(where, a) for a in args[:2]] + [self.name(where, args[2], f"{name} model")]
            out += [f"{k}={v}" for k, v in self.pairs(where, args[3:], name)]
        elif kind in "VI":
            need(3, f"{kind}name n+ n- [DC] value")
            rest = args[2:]
            if rest[0].upper() == "DC":
                rest = rest[1:]
            if len(rest) != 1:
                self.fail(where, f"{name}: only DC sources are allowed ({kind}name n+ n- [DC] value)")
            out = [self.node(where, a) for a in args[:2]] + ["DC", self.value(where, rest[0], f"{name} value")]
        elif kind in "EG":
            need(5, f"{kind}name n+ n- nc+ nc- gain")
            if len(args) != 5:
                self.fail(where, f"{name}: expected {kind}name n+ n- nc+ nc- gain")
            out = [self.node(where, a) for a in args[:4]] + [self.value(where, args[4], f"{name} gain")]
        elif kind in "FH":
            if len(args) != 4:
                self.fail(where, f"{name}: expected {kind}name n+ n- Vcontrol gain")
            out = [self.node(where, a) for a in args[:2]] + [
                self.ident(where, args[2], f"{name} controlling source"),
                self.value(where, args[3], f"{name} gain"),
            ]
        elif kind == "B":
            if len(args) != 3:
                self.fail(where, f"{name}: expected Bname n+ n- V={{expr}} or I={{expr}} (no spaces)")
            key, sep, expr = args[2].partition("=")
            if not sep or key.upper() not in ("V", "I") or not _EXPRESSION.match("{" + expr.strip("{}") + "}"):
                self.fail(where, f"{name}: expected V=expression or I=expression, got {args[2]!r}")
            out = [self.node(where, a) for a in args[:2]] + [f"{key.upper()}={expr}"]
        elif kind == "X":
            cut = next((i for i, t in enumerate(args) if "=" in t or t.lower() == "params:"), len(args))
            if cut < 2:
                self.fail(where, f"{name}: expected Xname nodes... subcircuit [KEY=VALUE ...]")
            out = [self.node(where, a) for a in args[: cut - 1]] + [self.name(where, args[cut - 1], "subcircuit")]
            tail = [t for t in args[cut:] if t.lower() != "params:"]
            out += [f"{k}={v}" for k, v in self.pairs(where, tail, name)]
        else:
            self.fail(
                where, f"element {name}: type {kind!r} is not allowed in a model file (use R C L D V I E F G H B X)"
            )
        return " ".join((name, *out))

    def include(self, where: str, tokens: list[str]) -> None:
        if len(tokens) != 2:
            what = "library sections are not supported; use .include FILE" if len(tokens) > 2 else "a file name"
            self.fail(where, f"{tokens[0]} needs {what}")
        target = tokens[1].strip("'\"")
        path = (self.stack[-1].parent / target).resolve()
        if not path.is_relative_to(self.root):
            self.fail(
                where, f"{tokens[0]} {target}: only files inside the model file's folder {self.root} may be included"
            )
        self.parse_file(path, where)

    def check_references(self) -> None:
        for sub in self.subcircuits.values():
            for line in sub.body:
                name, *args = line.split()
                kind = name[0].upper()
                if kind == "D" and args[2].lower() not in self.models:
                    self.fail(sub.name, f"{name} uses diode model {args[2]!r}, which the file does not define")
                if kind == "X":
                    ref = next(a for a in reversed(args) if "=" not in a)
                    if ref.lower() not in self.subcircuits:
                        self.fail(sub.name, f"{name} uses subcircuit {ref!r}, which the file does not define")
                    if ref.lower() == sub.name.lower():
                        self.fail(sub.name, f"{name} instantiates {sub.name} inside itself")

    def check_expansion(self) -> None:
        """Refuse instantiation cycles and subcircuits that flatten past ``MAX_EXPANDED_ELEMENTS``.

        Counts, leaves first (Kahn's order, no recursion): ``size(S)`` is the number of S's lines
        plus ``size`` of the subcircuit of each of its ``X`` lines. The first subcircuit over the
        cap stops the count, so the numbers stay small however deep the nesting."""
        uses = {
            key: [_instantiated(line) for line in sub.body if line[0] in "Xx"] for key, sub in self.subcircuits.items()
        }
        users: dict[str, list[str]] = {key: [] for key in uses}
        waiting = {key: len(refs) for key, refs in uses.items()}
        for key, refs in uses.items():
            for ref in refs:
                users[ref].append(key)
        ready = [key for key, n in waiting.items() if n == 0]
        size: dict[str, int] = {}
        while ready:
            key = ready.pop()
            sub = self.subcircuits[key]
            size[key] = len(sub.body) + sum(size[ref] for ref in uses[key])
            if size[key] > MAX_EXPANDED_ELEMENTS:
                self.fail(
                    self.defined_at[key],
                    f".subckt {sub.name} flattens to {size[key]} element lines with its nested subcircuits, "
                    f"more than the cap of {MAX_EXPANDED_ELEMENTS} (ngspice would build every copy); nest "
                    "fewer instances, or model the repeated part once with scaled values",
                )
            for user in users[key]:
                waiting[user] -= 1
                if waiting[user] == 0:
                    ready.append(user)
        looped = sorted(key for key in uses if key not in size)
        if looped:
            names = ", ".join(self.subcircuits[key].name for key in looped)
            self.fail(
                self.defined_at[looped[0]],
                f"subcircuits instantiate themselves through each other (a loop among {names}); ngspice cannot "
                "flatten them: break the loop",
            )


def load_model_library(path: str | Path) -> ModelLibrary:
    """Parse and validate a model library file (see the module docstring for the rules)."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path}: not found (give a path to a SPICE model library)")
    parser = _Parser(path.parent)
    parser.parse_file(path, str(path))
    parser.check_references()
    parser.check_expansion()
    return ModelLibrary(str(path), tuple(parser.models.values()), tuple(parser.subcircuits.values()))
