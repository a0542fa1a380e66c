"""`make push RUN=<run dir> REPO=<user/name>` → `python -m spanqa.push RUN --repo REPO`: publish a run's model.

Uploads the run's `model/` (safetensors weights, config, tokenizer and the model card written at the end of training,
which holds the run's official scores) to a Hugging Face model repo, private unless `--public`. Everything that can
stop the upload is checked first, each in one line and before any file is sent: a finished run with its card, a
namespaced repo id, a token, a reachable Hub. `--dry-run` prints the upload it would make and sends nothing.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from spanqa.env import hub_reachable, is_offline
from spanqa.errors import ArgumentParser, DataError, ModelLoadError, OutputError, reported
from spanqa.rundir.card import CARD
from spanqa.rundir.layout import MODEL_DIR
from spanqa.rundir.record import RunRecord


@dataclass(frozen=True)
class Upload:
    """Exactly what `push` sends: these files of `folder`, to `repo_id`, private or not, with this message."""

    repo_id: str
    private: bool
    folder: str
    files: list[str]
    commit_message: str


def plan_upload(run_dir: Path, repo_id: str, private: bool = True) -> Upload:
    """The upload of a finished run's model/, checked; DataError/ModelLoadError in one line otherwise."""
    segments = repo_id.split("/")
    if len(segments) != 2 or not all(segments) or repo_id.startswith((".", "/", "~")):
        raise DataError(f"--repo={repo_id!r} is invalid: a Hub model repo id is 'namespace/name' (your user or org)")
    record = RunRecord.read(run_dir)  # one line for a run that did not finish
    model_dir = run_dir / MODEL_DIR
    if not (model_dir / CARD).is_file():
        raise ModelLoadError(f"{model_dir} has no {CARD} (a model card): it was trained by an earlier spanqa")
    files = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file())
    pickles = [f for f in files if f.endswith((".bin", ".pt", ".pkl", ".pth"))]
    if pickles:
        raise ModelLoadError(f"{model_dir} holds pickled files ({', '.join(pickles)}): only safetensors are published")
    f1 = record.metrics.get("eval_f1")
    message = f"{record.run_name}: SQuAD v2 F1 {f1:.2f}" if isinstance(f1, float) else record.run_name
    return Upload(repo_id, private, str(model_dir), files, message)


def check_can_upload() -> None:
    """A token and a reachable Hub, or one line saying which is missing."""
    from huggingface_hub import get_token

    if get_token() is None:
        raise OutputError("no Hugging Face token: run `hf auth login` or set HF_TOKEN (a token with write access)")
    if is_offline() or not hub_reachable():
        why = "HF_HUB_OFFLINE is set" if is_offline() else "the Hub cannot be reached (no network?)"
        raise OutputError(f"cannot upload: {why}; nothing was sent")


def push(upload: Upload) -> str:
    """Create the repo (private unless asked) if needed and upload the files in one commit; its URL."""
    from huggingface_hub import create_repo, upload_folder

    try:
        create_repo(upload.repo_id, private=upload.private, exist_ok=True)
        info = upload_folder(
            repo_id=upload.repo_id,
            folder_path=upload.folder,
            allow_patterns=upload.files,
            commit_message=upload.commit_message,
        )
    except Exception as err:  # 401/403/404 from the Hub, or the network going away mid-upload
        first = (str(err).splitlines() or [""])[0]
        raise OutputError(f"upload to {upload.repo_id} failed: {type(err).__name__}: {first}") from err
    return str(getattr(info, "commit_url", info))


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m spanqa.push", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished training run dir")
    parser.add_argument("--repo", required=True, help="the Hub model repo: namespace/name")
    parser.add_argument("--public", action="store_true", help="a public repo (default: private)")
    parser.add_argument("--dry-run", action="store_true", help="print the upload as JSON and send nothing")
    args = parser.parse_args(argv)
    with reported():
        upload = plan_upload(args.run, args.repo, private=not args.public)
        if args.dry_run:
            print(json.dumps(asdict(upload), indent=1))
            return 0
        check_can_upload()
        url = push(upload)
    print(f"pushed {len(upload.files)} files of {upload.folder} to {upload.repo_id} "
          f"({'private' if upload.private else 'public'}): {url}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
