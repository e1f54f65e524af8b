"""README's "Other commands", run in order as a newcomer would: every command that reads an export
reads one that an earlier line wrote, from the same model, at the precision it needs (issue 17:
`evaluate my.pt --onnx artifacts/` used to read a folder the line before had replaced with hd)."""

from __future__ import annotations

import shlex

from helpers import REPO


def other_commands(text: str) -> list[list[str]]:
    block = text.split("Other commands:", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [ln.split("#", 1)[0].strip() for ln in block.splitlines()]
    return [shlex.split(ln)[1:] for ln in lines if ln.startswith("eventspd-export ")]


def _opt(args: list[str], name: str, default=None):
    return args[args.index(name) + 1] if name in args else default


def _positional(args: list[str]) -> str | None:
    rest = args[1:]
    return rest[0] if rest and not rest[0].startswith("-") else None


def problems(commands: list[list[str]]) -> list[str]:
    """What would fail, line by line: folder -> (model, precisions) as the commands write them."""
    folders: dict[str, tuple[str, set[str]]] = {}
    checkpoints: set[str] = set()
    found = []

    def model_of(args):
        ckpt = _positional(args)
        if ckpt is not None and ckpt not in checkpoints:
            found.append(f"{' '.join(args)}: {ckpt} is written by no earlier line")
        return ckpt or f"config:{_opt(args, '--config', 'hd')}"

    def export_in(args, folder, model, precision="fp32"):
        if folder not in folders:
            found.append(f"{' '.join(args)}: no earlier line exports into {folder}")
        elif model is not None and folders[folder][0] != model:
            found.append(f"{' '.join(args)}: {folder} holds {folders[folder][0]}, not {model}")
        elif precision not in folders[folder][1]:
            found.append(f"{' '.join(args)}: {folder} has no {precision} graphs")

    for args in commands:
        cmd = args[0]
        key = lambda d: d.rstrip("/")  # noqa: E731
        if cmd == "onnx":
            folders[key(_opt(args, "--out", "artifacts"))] = (model_of(args), {"fp32"})
        elif cmd == "train" and "--weights-out" in args:
            checkpoints.add(_opt(args, "--weights-out"))
        elif cmd == "evaluate":
            export_in(args, key(_opt(args, "--onnx")), model_of(args)) if "--onnx" in args else model_of(args)
        elif cmd == "calibrate":
            src, out = key(_opt(args, "--onnx-dir", "artifacts")), key(_opt(args, "--out", "artifacts"))
            model = model_of(args)
            export_in(args, src, model)
            precisions = set(_opt(args, "--precision", "fp16,int8").split(","))
            if src in folders:
                folders[out] = (model, (folders[out][1] if out in folders else {"fp32"}) | precisions)
        elif cmd in ("trt", "check"):
            precision = next((p for p in ("fp16", "int8") if f"--{p}" in args), _opt(args, "--precision", "fp32"))
            export_in(args, key(_opt(args, "--onnx-dir", "artifacts")), None, precision)
    return found


def test_other_commands_run_in_order():
    commands = other_commands((REPO / "README.md").read_text())
    assert [c[0] for c in commands].count("onnx") >= 2 and any(c[0] == "evaluate" for c in commands)
    assert problems(commands) == []


def test_the_check_can_fail():
    """Mutations: the old order (hd export into the folder evaluate then reads), a trt --fp16 without
    calibrate, and a checkpoint no line writes."""
    old = [["onnx", "ckpt.pt", "--out", "artifacts/"], ["onnx", "--config", "hd"],
           ["train", "--weights-out", "my.pt"], ["evaluate", "my.pt", "--onnx", "artifacts/"]]
    got = problems(old)
    assert any("ckpt.pt is written by no earlier line" in p for p in got)
    assert any("artifacts holds config:hd, not my.pt" in p for p in got)
    assert any("has no fp16 graphs" in p for p in problems([["onnx", "--config", "hd", "--out", "a"],
                                                              ["trt", "--fp16", "--onnx-dir", "a"]]))
