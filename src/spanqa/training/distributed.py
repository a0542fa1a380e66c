"""What changes when torchrun (or accelerate) starts several processes: one run dir, metrics computed once and
shared, and a clean shutdown. Single-process runs pass through every function unchanged."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transformers import TrainingArguments

log = logging.getLogger(__name__)


def broadcast(obj: Any) -> Any:
    """Rank 0's object on every rank (best-checkpoint selection reads eval_f1 everywhere)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def shared_run_dir(run_dir: Path, args: TrainingArguments) -> Path:
    """Rank 0's run dir, on every rank. Under torchrun each rank resolves hydra.run.dir itself and the default
    one holds a timestamp: ranks that straddle a second would each save their RNG state into their own
    checkpoints/ and every rank but 0 would miss the best checkpoint (its final eval shard silently uses the
    last weights). Call after TrainingArguments, which sets up torch.distributed."""
    shared = Path(broadcast(str(run_dir)))
    if shared != run_dir:
        log.warning("rank %d resolved run dir %s, rank 0 %s: using rank 0's", args.process_index, run_dir, shared)
        args.output_dir = str(shared / "checkpoints")
    return shared


def end_distributed() -> None:
    """After a successful run: wait until rank 0 has written the records, then tear the process group down.
    A rank that exits with its Gloo group alive can abort at interpreter shutdown ("terminate called without
    an active exception"), and torchrun then kills the other ranks, rank 0 possibly mid-write."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
