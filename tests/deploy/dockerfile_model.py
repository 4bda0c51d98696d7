"""Read a Dockerfile into stages and instructions, and answer what a target image ends up with.

Enough of the Dockerfile grammar for our own file: comments, parser directives, line
continuations, `FROM image [AS name]`, and the JSON (exec) or shell form of arguments. A stage
built `FROM` an earlier stage inherits its image settings (ENV, USER, ENTRYPOINT, CMD, HEALTHCHECK,
WORKDIR), as in Docker.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: RUN, COPY, ...
    arguments: str  # the text after the keyword, continuations joined
    line: int  # 1-based line of the keyword

    def exec_form(self) -> list[str] | None:
        """The JSON array form's items, or None for the shell form."""
        text = self.arguments.strip()
        if not text.startswith("["):
            return None
        return json.loads(text)

    def flags(self) -> dict[str, str]:
        """Leading `--name=value` flags (COPY --from=..., HEALTHCHECK --interval=...)."""
        found = {}
        for token in shlex.split(self.arguments):
            match = re.fullmatch(r"--([a-z-]+)=(.*)", token)
            if not match:
                break
            found[match.group(1)] = match.group(2)
        return found

    def positional(self) -> list[str]:
        """Arguments after the leading flags (COPY sources and destination, ...)."""
        items = self.exec_form()
        if items is not None:
            return items
        tokens = shlex.split(self.arguments)
        while tokens and tokens[0].startswith("--"):
            tokens.pop(0)
        return tokens


@dataclass
class Stage:
    name: str
    base: str  # the image or earlier stage it is built FROM
    index: int
    instructions: list[Instruction] = field(default_factory=list)

    def find(self, keyword: str) -> list[Instruction]:
        return [item for item in self.instructions if item.keyword == keyword]


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def by_name(self) -> dict[str, Stage]:
        return {stage.name: stage for stage in self.stages}

    @property
    def default_target(self) -> Stage:
        return self.stages[-1]

    def ancestry(self, name: str) -> list[Stage]:
        """The stage and the earlier stages it is built on, base first."""
        chain = []
        stage: Stage | None = self.by_name[name]
        while stage is not None:
            chain.append(stage)
            stage = self.by_name.get(stage.base)
        return list(reversed(chain))

    def external_base(self, name: str) -> str:
        """The registry image a target ultimately starts from, ARGs substituted."""
        return substitute(self.ancestry(name)[0].base, self.global_args)

    def effective(self, name: str, keyword: str) -> Instruction | None:
        """The last instruction of KEYWORD in force for a target (inherited from its bases)."""
        found = None
        for stage in self.ancestry(name):
            for item in stage.find(keyword):
                found = item
        return found

    def commands(self, name: str) -> list[list[str]]:
        """The shell commands a stage RUNs (each `a && b` split in two), as argv, ARG and ENV substituted."""
        variables = {**self.build_args(name), **self.environment(name)}
        return [
            shlex.split(substitute(part, variables))
            for item in self.by_name[name].find("RUN") if item.exec_form() is None
            for part in item.arguments.split("&&")
        ]

    def command(self, name: str, *prefix: str) -> list[str]:
        """The one command of a stage that starts with PREFIX (`"earshot", "export"`)."""
        (found,) = [argv for argv in self.commands(name) if tuple(argv[: len(prefix)]) == prefix]
        return found

    def destination(self, source: str) -> str:
        """Where a COPY from the build context puts SOURCE (a path relative to the context)."""
        for stage in self.stages:
            for item in stage.find("COPY"):
                paths = item.positional()
                if "from" not in item.flags() and source in paths[:-1]:
                    return paths[-1]
        raise KeyError(f"{source} is not copied into any stage")

    def build_args(self, name: str) -> dict[str, str]:
        """ARGs a stage declares, with their defaults (a bare `ARG X` takes the global `ARG X=...`)."""
        values: dict[str, str] = {}
        for item in self.by_name[name].find("ARG"):
            key, has_default, default = item.arguments.partition("=")
            key = key.strip()
            if has_default:
                values[key] = default.strip()
            elif key in self.global_args:
                values[key] = self.global_args[key]
        return values

    def environment(self, name: str) -> dict[str, str]:
        """ENV in force in a target image."""
        env: dict[str, str] = {}
        for stage in self.ancestry(name):
            for item in stage.find("ENV"):
                env.update(parse_env(item.arguments, env))
        return env


def parse(path: Path) -> Dockerfile:
    lines = path.read_text(encoding="utf-8").splitlines()
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue  # comments, parser directives, blank lines
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped, as Docker does
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].rstrip())
            continue
        pending.append(stripped)
        text = " ".join(part for part in pending if part)
        pending = []
        keyword, _, arguments = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
    if pending:
        raise ValueError(f"{path}: the last instruction ends with a continuation")

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for item in instructions:
        if item.keyword == "FROM":
            tokens = item.arguments.split()
            tokens = [token for token in tokens if not token.startswith("--platform")]
            name = tokens[2] if len(tokens) == 3 and tokens[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=tokens[0], index=len(stages)))
        elif not stages:
            if item.keyword != "ARG":
                raise ValueError(f"{path}:{item.line}: only ARG may come before the first FROM")
            key, _, value = item.arguments.partition("=")
            global_args[key.strip()] = value.strip()
        else:
            stages[-1].instructions.append(item)
    return Dockerfile(path=path, global_args=global_args, stages=stages)


def parse_env(arguments: str, known: dict[str, str]) -> dict[str, str]:
    """`ENV A=1 B="two words"` (or the legacy `ENV A 1`), with $VAR references substituted."""
    tokens = shlex.split(arguments)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: substitute(" ".join(tokens[1:]), known)}
    values: dict[str, str] = {}
    for token in tokens:
        key, _, value = token.partition("=")
        values[key] = substitute(value, {**known, **values})
    return values


def substitute(text: str, variables: dict[str, str]) -> str:
    """Replace ${NAME} and $NAME with their values (unknown names are kept as written)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", replace, text)
