"""Run a composite GitHub Action's steps locally, the way a GitHub runner does.

`run_action(action_dir, inputs, workdir)` reads `action.yml`, checks the inputs against the
declared ones (defaults filled in, unknown ones refused), and runs each step in order:

- `${{ inputs.x }}`, `${{ github.action_path }}` and `${{ steps.id.outputs.y }}` are substituted
  into `env:` values and the `run:` text, as GitHub expands expressions before a step runs; any
  other expression is an error here, so an action cannot come to rely on something this runner
  does not imitate;
- a `shell: bash` step runs as `bash --noprofile --norc -eo pipefail {file}` (GitHub's bash
  invocation), with GitHub's variables set: `GITHUB_ACTIONS`, `CI`, `GITHUB_WORKSPACE`,
  `GITHUB_ACTION_PATH`, `RUNNER_TEMP`, and the command files `GITHUB_OUTPUT` (fresh per step),
  `GITHUB_ENV`, `GITHUB_PATH`, `GITHUB_STEP_SUMMARY`; what a step appends to `GITHUB_ENV` is in
  the environment of the steps after it;
- `::add-mask::VALUE` lines on stdout mask VALUE in everything printed after them (the log);
- the first failing step fails the action, and the steps after it do not run.

The action's outputs are its `outputs.*.value` expressions over the steps' outputs.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ActionRun", "StepRun", "parse_command_file", "run_action"]

_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_MASK = "***"


@dataclass
class StepRun:
    """One step's result: exit status, its masked output, its outputs."""

    name: str
    returncode: int
    stdout: str
    stderr: str
    outputs: dict[str, str]


@dataclass
class ActionRun:
    """The whole action: its steps' results, its outputs, the masked log."""

    steps: list[StepRun] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    masks: list[str] = field(default_factory=list)
    raw_stdout: str = ""  # unmasked, as the runner reads it (workflow commands included)
    summary: str = ""  # what the steps appended to GITHUB_STEP_SUMMARY

    @property
    def ok(self) -> bool:
        """Every step succeeded."""
        return all(step.returncode == 0 for step in self.steps)

    @property
    def log(self) -> str:
        """What the job's log shows: every step's masked stdout and stderr."""
        return "\n".join(step.stdout + step.stderr for step in self.steps)


def parse_command_file(text: str) -> dict[str, str]:
    """`name=value` lines and `name<<DELIMITER` ... `DELIMITER` blocks (GITHUB_OUTPUT/ENV)."""
    values: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i)
            values[name] = "\n".join(lines[i:end])
            i = end + 1
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"malformed command file line: {line!r}")
        values[name] = value
    return values


def run_action(
    action_dir: Path,
    inputs: Mapping[str, str],
    workdir: Path,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> ActionRun:
    """Run the composite action in `action_dir` with `inputs`; see the module docstring."""
    meta: dict[str, Any] = yaml.safe_load((action_dir / "action.yml").read_text(encoding="utf-8"))
    assert meta["runs"]["using"] == "composite", meta["runs"]
    declared: dict[str, Any] = meta.get("inputs") or {}
    unknown = set(inputs) - set(declared)
    assert not unknown, f"inputs not declared in action.yml: {sorted(unknown)}"
    values = {
        name: str(inputs.get(name, spec.get("default", ""))) for name, spec in declared.items()
    }
    files = _command_files(workdir)
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": str(workdir),
        "GITHUB_ACTION_PATH": str(action_dir),
        "RUNNER_TEMP": str(workdir / "runner-temp"),
        "GITHUB_ENV": str(files["env"]),
        "GITHUB_PATH": str(files["path"]),
        "GITHUB_STEP_SUMMARY": str(files["summary"]),
        **(env or {}),
    }
    run = ActionRun()
    steps: dict[str, dict[str, str]] = {}
    context = {"inputs": values, "action_path": str(action_dir), "steps": steps}
    for index, step in enumerate(meta["runs"]["steps"]):
        result = _run_step(index, step, base, files, context, run, timeout)
        run.steps.append(result)
        if "id" in step:
            steps[step["id"]] = result.outputs
        if result.returncode != 0:
            break
    run.summary = files["summary"].read_text(encoding="utf-8")
    if run.ok:
        for name, spec in (meta.get("outputs") or {}).items():
            run.outputs[name] = _substitute(str(spec["value"]), context)
    return run


def _command_files(workdir: Path) -> dict[str, Path]:
    (workdir / "runner-temp").mkdir(parents=True, exist_ok=True)
    files = {name: workdir / "runner-temp" / f"{name}.txt" for name in ("env", "path", "summary")}
    for path in files.values():
        path.write_text("", encoding="utf-8")
    return files


def _run_step(
    index: int,
    step: dict[str, Any],
    base: Mapping[str, str],
    files: Mapping[str, Path],
    context: Mapping[str, Any],
    run: ActionRun,
    timeout: float,
) -> StepRun:
    assert step.get("shell") == "bash", f"step {index}: only `shell: bash` is imitated"
    assert "uses" not in step and "if" not in step, f"step {index}: not imitated: {step}"
    output_file = files["env"].parent / f"output-{index}.txt"
    output_file.write_text("", encoding="utf-8")
    script = files["env"].parent / f"step-{index}.sh"
    script.write_text(_substitute(step["run"], context), encoding="utf-8")
    step_env = {
        **base,
        **parse_command_file(files["env"].read_text(encoding="utf-8")),
        **{k: _substitute(str(v), context) for k, v in (step.get("env") or {}).items()},
        "GITHUB_OUTPUT": str(output_file),
    }
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        cwd=base["GITHUB_WORKSPACE"],
        env=step_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    run.raw_stdout += done.stdout
    stdout_lines = []
    for line in done.stdout.splitlines():
        if line.startswith("::add-mask::"):
            run.masks.append(line.removeprefix("::add-mask::"))
            continue  # the runner consumes the command: it is never shown
        stdout_lines.append(line)
    return StepRun(
        name=str(step.get("name", f"step {index}")),
        returncode=done.returncode,
        stdout=_mask("\n".join(stdout_lines), run.masks),
        stderr=_mask(done.stderr, run.masks),
        outputs=parse_command_file(output_file.read_text(encoding="utf-8")),
    )


def _mask(text: str, masks: list[str]) -> str:
    for secret in masks:
        if secret:
            text = text.replace(secret, _MASK)
    return text


def _substitute(text: str, context: Mapping[str, Any]) -> str:
    def value(match: re.Match[str]) -> str:
        expr = match.group(1)
        parts = expr.split(".")
        if len(parts) == 2 and parts[0] == "inputs":
            return str(context["inputs"][parts[1]])
        if expr == "github.action_path":
            return str(context["action_path"])
        if len(parts) == 4 and parts[0] == "steps" and parts[2] == "outputs":
            return str(context["steps"].get(parts[1], {}).get(parts[3], ""))
        raise ValueError(f"expression not imitated here: ${{{{ {expr} }}}}")

    return _EXPRESSION.sub(value, text)
