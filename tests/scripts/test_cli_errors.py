"""Bad input at the ``vla`` command line: one ``error: ...`` line on stderr, exit code 2, no traceback, no tyro
box with internal names, nothing left behind. The table of cases is also the README's reliability table
(``test_readme_table_matches`` checks it; ``python tests/scripts/test_cli_errors.py`` prints it)."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests/harness"), str(REPO / "tests/train")]
T = "TwoRobotPickCube-v1"
FAKE = ["--env-factory", "fakes:make_fake_env", "--video", "none", "--no-progress", "--max-episode-steps", "10"]

# (what the user tries, command with {tmp} for the test's folder, setup, what the user sees)
CASES = [
    ("an unknown policy", f"bench --policy nosuch --tasks {T} --seeds 0 --out {{tmp}}/o", None,
     "unknown policy 'nosuch'; known: ['checkpoint', 'random', 'remote', 'replay', 'scripted']"),
    ("a checkpoint that does not exist",
     f"bench --policy checkpoint:/nonexistent --tasks {T} --seeds 0 --out {{tmp}}/o", None,
     "checkpoint:/nonexistent: not a directory"),
    ("a checkpoint cut short", f"bench --policy checkpoint:{{tmp}}/run/checkpoints/step_2 --tasks {T} --seeds 0 "
     "--out {tmp}/o", "cut checkpoint", "step_2/model.safetensors: 1000 bytes, the manifest says"),
    ("`--out` that is a regular file (bench)", f"bench --policy scripted --tasks {T} --seeds 0 --out {{tmp}}/file",
     "file", "out: {tmp}/file exists and is not a folder"),
    ("`--out` that is a regular file (train)", "train --data {tmp} --out {tmp}/file", "file",
     "out: {tmp}/file exists and is not a folder"),
    ("a malformed YAML config", "train --config {tmp}/bad.yaml", "bad yaml",
     "{tmp}/bad.yaml: not valid YAML at line 2, column 1"),
    ("a bench folder that exists, without `--resume`", f"bench --policy random --tasks {T} --seeds 0:2 --out {{tmp}}/b "
     + " ".join(FAKE), "bench run", "already exists: pass --resume to continue that run, or choose a new --out"),
    ("`--resume` with changed settings", f"bench --policy random --tasks {T} --seeds 0:2 --out {{tmp}}/b --resume "
     + " ".join(FAKE[:-1]) + " 20", "bench run",
     "was written with other settings (max_episode_steps: was {'TwoRobotPickCube-v1': 10}, now "
     "{'TwoRobotPickCube-v1': 20})"),
    ("a train folder with checkpoints, without `--resume`", "train --config {tmp}/micro.yaml", "train run",
     "already has checkpoints (step_2 ...); pass --resume to continue this run"),
    ("train `--resume` with a changed learning rate", "train --config {tmp}/micro.yaml --resume --lr 0.1",
     "train run", "lr: checkpoint 0.0005 vs now 0.1"),
    ("an unknown task for `vla demos`", "demos --task NoSuchTask-v1 --episodes 1 --out {tmp}/d", None,
     "unknown task 'NoSuchTask-v1'"),
    ("a missing reference file for check-checkpoint", "check-checkpoint {tmp} --reference {tmp}/missing.safetensors",
     None, "{tmp}/missing.safetensors: reference file not found"),
    ("a seed >= 2^32", f"bench --policy scripted --tasks {T} --seeds 4294967296 --out {{tmp}}/o", None,
     "seeds: must be < 2^32 (ManiSkill's RNG takes 32-bit seeds), got 4294967296"),
    ("`--benchmark` naming a missing file", "bench --policy scripted --benchmark path/missing.yaml --out {tmp}/o", None,
     "benchmark spec file path/missing.yaml does not exist"),
    ("disk full while writing a checkpoint", "train --config {tmp}/micro.yaml --steps 2", "disk full",
     "no space left on device while writing"),
    ("`--ray-address` without `--executor ray`", f"bench --policy scripted --tasks {T} --seeds 0 --out {{tmp}}/o "
     "--ray-address auto", None, "--ray-address and --ray-num-gpus need --executor ray"),
    ("a sweep spec whose baseline is not a variant", "sweep {tmp}/spec.yaml --out {tmp}/s", "bad sweep",
     "{tmp}/spec.yaml: baseline 'nope' is not a variant; variants: ['a', 'b']"),
]  # fmt: skip


def _setup(kind: str | None, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scripts.cli import main

    if kind == "file":
        (tmp / "file").write_text("not a folder")
    elif kind == "bad yaml":
        (tmp / "bad.yaml").write_text("steps: [1, 2\n")
    elif kind == "bad sweep":
        (tmp / "recipe.yaml").write_text("steps: 2\n")
        (tmp / "spec.yaml").write_text(
            "name: s\nrecipe: recipe.yaml\ndata: d\nbench: {}\nbaseline: nope\nvariants: {a: {}, b: {}}\n"
        )
    elif kind == "bench run":
        with pytest.raises(SystemExit) as done:
            main(["bench", "--policy", "random", "--tasks", T, "--seeds", "0:2", "--out", str(tmp / "b"), *FAKE])
        assert done.value.code == 0
    elif kind in ("train run", "cut checkpoint", "disk full"):
        from trainer_fixtures import write_dataset, write_micro_yaml

        write_micro_yaml(tmp / "micro.yaml", write_dataset(tmp / "data"), tmp / "run", steps=2, lr=5e-4)
        if kind != "disk full":
            with pytest.raises(SystemExit) as done:
                main(["train", "--config", str(tmp / "micro.yaml")])
            assert done.value.code == 0
        if kind == "cut checkpoint":
            weights = tmp / "run/checkpoints/step_2/model.safetensors"
            weights.write_bytes(weights.read_bytes()[:1000])
        if kind == "disk full":
            import common.files

            def full(*args, **kwargs):
                raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr(common.files, "fsync_tree", full)


@pytest.mark.parametrize("what, command, setup, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, what, command, setup, message):
    from scripts.cli import main

    monkeypatch.chdir(tmp_path)
    _setup(setup, tmp_path, monkeypatch)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if ".lock" not in p.name)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(command.replace("{tmp}", str(tmp_path)).split())
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert stop.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message.replace("{tmp}", str(tmp_path)) in lines[0], lines[0]
    assert "Traceback" not in err and "__tyro" not in err
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if ".lock" not in p.name)
    new = [p for p in after if p not in before and not str(p).startswith(("data", "run/tensorboard"))]
    assert not new or setup in ("bench run", "train run", "disk full"), f"left behind: {new}"


def test_unexpected_errors_keep_their_traceback(monkeypatch) -> None:
    import scripts.cli

    def bug(args):
        return [][1]

    monkeypatch.setattr(scripts.cli, "_dispatch", bug)
    with pytest.raises(IndexError):
        scripts.cli.main(["envs"])


def readme_table() -> str:
    """The README's bad-input table, made from :data:`CASES`."""
    rows = ["| input | what `vla` prints (exit code 2) |", "|---|---|"]
    for what, _, _, message in CASES:
        rows.append(f"| {what} | `error: ...{message.replace('{tmp}', 'DIR')}...` |")
    return "\n".join(rows)


def test_readme_table_matches() -> None:
    text = (REPO / "README.md").read_text()
    start, end = "<!-- bad-input-table:start -->\n", "\n<!-- bad-input-table:end -->"
    assert start in text and end in text, "README.md lost its bad-input table markers"
    block = text.split(start, 1)[1].split(end, 1)[0]
    assert block == readme_table(), "README's table is stale; paste `python tests/scripts/test_cli_errors.py`"


if __name__ == "__main__":
    print(readme_table())
