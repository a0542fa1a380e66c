"""Documentation that runs: every command block of the READMEs, run as written.

Each fenced `bash` or `python` block of README.md, experiments/*/README.md and src/**/README.md is read line by line.
A command runs for real, in a scratch copy of the repository (its own outputs/) with a Hugging Face cache holding
the replicas of SpanBERT, BERT's tokenizer and SQuAD v2 (`tests/replicas.py`), offline:

- `make` targets that train run as written with tiny-size overrides appended to ARGS (a few steps, a few hundred
  questions); those that need what is not here (several GPUs, a SLURM cluster, CUDA benchmarks) are composed
  only: the Makefile expands them (`make -n`), and the command it would run is parsed by the program itself
  (`--cfg job` for spanqa.train, Hydra's compose for a SLURM sweep, each benchmark's argument parser);
- `make test`, `make test-slow` and `make lint` are what CI runs (`.ci/run`): expanded only, to avoid recursion;
- `hf download` lines are parsed by the `hf` CLI's own parser (the Hub is unreachable here), and the replica of
  what they fetch is put where they would put it;
- `<run>`, `<time>` and `<date>` placeholders become the run dirs the commands before them made.

A command the harness does not know how to run fails the test: a new kind of command needs a rule here.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO, subprocess_env

DOCS = [REPO / "README.md", *sorted(REPO.glob("experiments/*/README.md")), *sorted((REPO / "src").rglob("README.md"))]
# Tiny-size overrides appended to every documented training command.
TINY = ["trainer.max_steps=2", "data.max_train_samples=200", "data.max_eval_samples=20", "trainer.device=cpu"]
TINY_DEMO = ["demo.train_examples=300", "demo.dev_examples=40"]
TRAINING_TARGETS = {"demo", "smoke", "train", "sweep", "train-ddp"}
CI_TARGETS = {"test", "test-slow", "lint"}
BENCH_MODULES = {
    "bench-trainer": "spanqa.benchmarks.trainer_steps",
    "bench-throughput": "spanqa.benchmarks.throughput",
    "bench-crf": "spanqa.benchmarks.crf_step",
    "bench-postprocess": "spanqa.benchmarks.postprocess",
}


@dataclass(frozen=True)
class Command:
    doc: Path
    line: int
    kind: str  # bash | python
    text: str

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def command_blocks(doc: Path) -> list[Command]:
    """The commands of a markdown file's ```bash and ```python blocks, in order; continuation lines joined."""
    out: list[Command] = []
    lines = doc.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w+)\s*$", lines[i])
        if not fence or fence.group(1) not in ("bash", "python"):
            i += 1
            continue
        start, block = i + 1, []
        i += 1
        while not lines[i].startswith("```"):
            block.append(lines[i])
            i += 1
        if fence.group(1) == "python":
            out.append(Command(doc, start + 1, "python", "\n".join(block)))
            continue
        pending, first = "", 0
        for n, line in enumerate(block):
            if not pending:
                first = start + n + 1
            pending += line.rstrip("\\") + " " if line.endswith("\\") else line
            if line.endswith("\\"):
                continue
            words = shlex.split(pending, comments=True)
            if words:
                out.append(Command(doc, first, "bash", pending))
            pending = ""
    return out


ALL = [c for doc in DOCS for c in command_blocks(doc)]


def make_parts(command: Command) -> tuple[str, dict[str, str]]:
    """`make TARGET VAR=value …` → (target, variables)."""
    words = shlex.split(command.text, comments=True)
    assert words[0] == "make" and len(words) >= 2, command.where
    variables = dict(w.split("=", 1) for w in words[2:])
    return words[1], variables


def mode(command: Command) -> str:
    """How the harness exercises a command: run, compose, ci or parse."""
    if command.kind == "python":
        return "run"
    words = shlex.split(command.text, comments=True)
    if words[:2] == ["hf", "download"]:
        return "parse"
    if words[0] != "make":
        raise AssertionError(f"{command.where}: no rule runs `{command.text}`: add one to tests/test_docs.py")
    target, variables = make_parts(command)
    args = variables.get("ARGS", "")
    if target in CI_TARGETS:
        return "ci"
    if target == "push":  # the Hub is unreachable here: the upload it would send, printed
        return "compose"
    if target in BENCH_MODULES:
        return "compose" if ("cuda" in args or "base" in args) else "run"
    if target == "train-ddp" or variables.get("launcher") == "slurm" or "hydra/launcher=slurm" in args:
        return "compose"
    return "run"


# ---------------------------------------------------------------------------------------------------- fast: static
@pytest.mark.parametrize("command", ALL, ids=[c.where for c in ALL])
def test_every_documented_command_has_a_rule_and_expands(command: Command) -> None:
    how = mode(command)
    if command.kind == "bash" and shlex.split(command.text, comments=True)[0] == "make":
        target, variables = make_parts(command)
        proc = subprocess.run(
            ["make", "-n", target, *(f"{k}={v}" for k, v in variables.items())],
            cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
        )  # fmt: skip
        assert proc.returncode == 0, f"{command.where}: {proc.stderr.strip()}"
        if how == "ci":
            assert f"make {target}\n" in (REPO / ".ci" / "run").read_text(), f"{command.where}: not what CI runs"


def test_a_misspelt_or_wrongly_cased_make_variable_stops_make() -> None:
    cases = [  # (make arguments, what the one line names)
        (["train", "MODEL=spanbert_crf"], "MODEL= is not a variable of this Makefile (did you mean model=?)"),
        (["train", "modle=spanbert_crf"], "modle= is not a variable"),
        (["predict", "MODEL=outputs/runs/x"], "MODEL= is not a variable of this Makefile (did you mean RUN=?)"),
        (
            ["push", "MODEL=outputs/runs/x", "REPO=me/x"],
            "MODEL= is not a variable of this Makefile (did you mean RUN=?)",
        ),
    ]
    for arguments, named in cases:
        proc = subprocess.run(["make", "-n", *arguments], cwd=REPO, env=subprocess_env(), capture_output=True,
                              text=True)  # fmt: skip
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and named in proc.stderr
    proc = subprocess.run(["make", "-n", "predict", "model=x"], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True)  # fmt: skip
    assert proc.returncode == 2 and "make predict needs RUN=<run dir or checkpoint dir>" in proc.stderr


def test_hydra_flags_in_args_compose_with_a_model_in_any_order() -> None:
    for args in ("--multirun hparams_search=optuna_f1", "hparams_search=optuna_f1 --multirun"):
        proc = subprocess.run(["make", "-n", "train", "model=spanbert_crf", f"ARGS={args}"], cwd=REPO,
                              env=subprocess_env(), capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    probe = "from spanqa.train import flags_first; print(flags_first(['model=x', '--multirun', 'a=1', '--cfg', 'job']))"
    out = subprocess.run([sys.executable, "-c", probe], env=subprocess_env(), capture_output=True, text=True).stdout
    assert out.strip() == "['--multirun', '--cfg', 'job', 'model=x', 'a=1']"


def test_hf_download_lines_parse_as_the_hub_cli_reads_them() -> None:
    """The Hub is unreachable here: what each line would fetch is read with the `hf` CLI's own parser."""
    lines = [c for c in ALL if mode(c) == "parse"]
    assert len(lines) >= 3
    for c in lines:
        params = hf_download_params(c.text)
        assert params["local_dir"], f"{c.where}: no --local-dir"
        assert not [f for f in params["filenames"] if any(ch in f for ch in "*?[")], f"{c.where}: a glob as filename"


def test_the_offline_errors_download_lines_parse_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lines the offline preflight suggests are commands a user copies: the same parser reads them."""
    from hydra import compose, initialize_config_dir

    from spanqa.config import validate
    from spanqa.training.preflight import missing_artifacts

    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache: model, tokenizer and dataset all missing
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        missing = missing_artifacts(validate(compose(config_name="config")))
    assert [m.key for m in missing] == ["model.name_or_path", "model.tokenizer_fallback", "data.dataset_name"]
    for m in missing:
        params = hf_download_params(m.download)
        assert (params["repo_id"], params["local_dir"], params["filenames"]) == (m.name, "DIR", ())


def hf_download_params(text: str) -> dict:
    import click
    from huggingface_hub.cli.hf import app

    lazy = app.get_command(click.Context(app), "download")
    command = lazy.materialize() if hasattr(lazy, "materialize") else lazy
    return command.make_context("download", shlex.split(text, comments=True)[2:]).params


# ---------------------------------------------------------------------------------------------------- slow: as written
@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory, hub_cache: Path, demo_dir: Path) -> Path:
    """A copy of the repository to run the commands in: the sources linked, outputs/ its own."""
    root = tmp_path_factory.mktemp("repo")
    for name in ("Makefile", "conf", "src", "experiments", "requirements.txt", "pyproject.toml", ".venv", ".ci"):
        (root / name).symlink_to(REPO / name)
    (root / "outputs").mkdir()
    dev = json.loads((demo_dir / "dev.json").read_text())
    rows = [{"id": qa["id"], "question": qa["question"], "context": p["context"]}
            for a in dev["data"] for p in a["paragraphs"] for qa in p["qas"]][:30]  # fmt: skip
    (root / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def newest(root: Path, pattern: str) -> Path:
    found = sorted(root.glob(pattern), key=lambda p: p.stat().st_mtime)
    assert found, f"nothing matches {pattern} under {root}: the command that makes it has not run"
    return found[-1]


def substituted(text: str, root: Path) -> str:
    """The placeholders of a command, and the absolute paths of the offline-cluster example, made real."""

    def finished_run(pattern: str) -> str:
        return str(newest(root, pattern + "/run.json").parent.relative_to(root))

    text = re.sub(r"(?<![\w./])/(models|data)/", lambda m: f"{root}/{m.group(1)}/", text)
    text = re.sub(r"outputs/runs/<date>/<time>_spanbert_crf-seed42", lambda m: interrupted(root), text)
    text = re.sub(r"outputs/runs/<run>", lambda m: finished_run("outputs/runs/*/*"), text)
    text = text.replace("REPO=<user>/", "REPO=someone/")
    text = re.sub(r"outputs/multirun/spanbert_vs_crf/<time>", lambda m: str(
        newest(root, "outputs/multirun/spanbert_vs_crf/*").relative_to(root)), text)  # fmt: skip
    assert "<" not in text.replace("<=", ""), f"a placeholder the harness does not know: {text}"
    return text


def interrupted(root: Path) -> str:
    """An interrupted spanbert_crf run: a finished one's checkpoints and start record, without its record."""
    finished = newest(root, "outputs/runs/*/*_spanbert_crf-seed42/run.json").parent
    copy = finished.with_name(finished.name.replace("_spanbert_crf", "0_spanbert_crf"))
    if not copy.exists():
        shutil.copytree(finished, copy, ignore=shutil.ignore_patterns("run.json", "model", ".lock"))
    return str(copy.relative_to(root))


def run_make(command: Command, root: Path, hub_cache: Path) -> subprocess.CompletedProcess[str]:
    words = shlex.join(shlex.split(command.text, comments=True))  # without its comment
    target, variables = make_parts(Command(command.doc, command.line, "bash", substituted(words, root)))
    how = mode(command)
    env = subprocess_env(HF_HOME=str(hub_cache))
    if how == "compose":
        return compose_only(command, target, variables, root, env)
    if target in TRAINING_TARGETS:
        extra = TINY + (TINY_DEMO if "demo" in (target + variables.get("experiment", "") + variables.get("ARGS", ""))
                        else []) + (["hydra.sweeper.n_trials=1"] if "hparams_search=" in variables.get("ARGS", "")
                                    else [])  # fmt: skip
        variables["ARGS"] = " ".join([variables.get("ARGS", ""), *extra]).strip()
    return subprocess.run(
        ["make", "-s", target, *(f"{k}={v}" for k, v in variables.items())],
        cwd=root, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def expanded(target: str, variables: dict[str, str], root: Path) -> list[str]:
    proc = subprocess.run(["make", "-n", "-s", target, *(f"{k}={v}" for k, v in variables.items())], cwd=root,
                          env=subprocess_env(), capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return shlex.split(proc.stdout.strip().splitlines()[-1])


def compose_only(command: Command, target: str, variables: dict[str, str], root: Path, env: dict[str, str]):
    """What a command needing GPUs, a cluster or CUDA would run, parsed by the program that would run it."""
    if target == "push":
        variables["ARGS"] = " ".join([variables.get("ARGS", ""), "--dry-run"]).strip()
        proc = subprocess.run(["make", "-s", target, *(f"{k}={v}" for k, v in variables.items())], cwd=root, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        if proc.returncode == 0:
            assert json.loads(proc.stdout)["repo_id"] == variables["REPO"], proc.stdout
        return proc
    argv = expanded(target, variables, root)
    if target in BENCH_MODULES:  # its flags as its own parser reads them (a flag it does not know exits 2)
        module = __import__(BENCH_MODULES[target], fromlist=["build_parser"])
        module.build_parser().parse_args(argv[argv.index(BENCH_MODULES[target]) + 1 :])
        return subprocess.CompletedProcess(argv, 0, "", "")
    train_args = argv[argv.index("spanqa.train") + 1 :]
    if target == "train-ddp":
        assert argv[argv.index("--nproc_per_node") + 1] == variables["NGPUS"], argv
    if "--multirun" not in train_args:  # torchrun's job: one process composes and validates it
        return subprocess.run([sys.executable, "-m", "spanqa.train", *train_args, "--cfg", "job"], cwd=root, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    return compose_sweep(train_args, root)


def compose_sweep(train_args: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    """A sweep for a cluster: its first point composed with its Hydra config (the launcher), and validated."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import open_dict

    from spanqa.config import validate

    overrides = []
    for parsed in OverridesParser.create().parse_overrides([a for a in train_args if not a.startswith("-")]):
        value = next(iter(parsed.sweep_string_iterator())) if parsed.is_sweep_override() else parsed.value()
        overrides.append(f"{parsed.get_key_element()}={value}")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher"), cfg.hydra.launcher._target_
    with open_dict(cfg):
        del cfg["hydra"]
    validate(cfg)
    return subprocess.CompletedProcess(train_args, 0, "", "")


def run_hf_download(command: Command, root: Path, real: dict[str, Path]) -> None:
    """Put the replica of what the line would fetch where it would put it."""
    params = hf_download_params(substituted(shlex.join(shlex.split(command.text, comments=True)), root))
    source = {
        "SpanBERT/spanbert-base-cased": real["hub_model"],
        "google-bert/bert-base-cased": real["tokenizer"],
        "rajpurkar/squad_v2": real["dataset"],
    }[params["repo_id"]]
    target = Path(params["local_dir"])
    target.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        if not params["filenames"] or f.name in params["filenames"]:
            (shutil.copytree if f.is_dir() else shutil.copy)(f, target / f.name)
    missing = [f for f in params["filenames"] if not (target / f).exists()]
    assert not missing, f"{command.where}: the repo has no {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("command", ALL, ids=[c.where for c in ALL])
def test_every_documented_command_works_as_written(
    command: Command, scratch: Path, hub_cache: Path, real: dict[str, Path]
) -> None:
    how = mode(command)
    if how == "ci":
        pytest.skip("run by CI itself (.ci/run); expanded by the fast test")
    if how == "parse":
        run_hf_download(command, scratch, real)
        return
    if command.kind == "python":
        code = substituted(command.text, scratch)
        proc = subprocess.run([sys.executable, "-c", code], cwd=scratch, env=subprocess_env(HF_HOME=str(hub_cache)),
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    else:
        proc = run_make(command, scratch, hub_cache)
    assert proc.returncode == 0, f"{command.where}: `{command.text}`\n{proc.stderr[-3000:]}"


def test_the_harness_reads_every_block(tmp_path: Path) -> None:
    """Continuation lines, comments and python blocks as the READMEs use them; output blocks are not commands."""
    doc = tmp_path / "README.md"
    doc.write_text(
        'x\n```bash\nmake train \\\n  ARGS="a=1"   # comment\n# only a comment\n\nmake demo\n```\n'
        "```\nnot a command\n```\n```python\nprint(1)\nprint(2)\n```\n"
    )
    assert [(c.line, c.kind, c.text) for c in command_blocks(doc)] == [
        (3, "bash", 'make train    ARGS="a=1"   # comment'),
        (7, "bash", "make demo"),
        (13, "python", "print(1)\nprint(2)"),
    ]
    assert make_parts(command_blocks(doc)[0]) == ("train", {"ARGS": "a=1"})
