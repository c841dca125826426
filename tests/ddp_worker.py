"""One process of the multi-process fine-tuning tests: ``torchrun --nproc_per_node 2 tests/ddp_worker.py KIND OUT``
(or plain ``python tests/ddp_worker.py KIND OUT`` for the one-process reference).

KIND is ``finetune`` (tdnotebooks' loop) or ``trainer`` (BucketTrainer). Each process writes OUT/rank{r}.json:
the global batches it iterated (example ids), its step records, and digests of its final weights, plus
OUT/rank{r}-head.pt (the trained classifier head) for a close comparison with the one-process run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

from tdnotebooks.data import load_task  # noqa: E402
from tdnotebooks.finetuning import FinetuneCallback, FinetuneConfig, finetune, prepare, set_dropout  # noqa: E402
from tdnotebooks.models import load_pretrained, load_tokenizer  # noqa: E402

CONFIG = dict(method="tokendrop_bucket", epochs=2, base_batch_size=3, token_budget=256, grad_accum_steps=2,
              lr=2e-4, warmup_ratio=0.0, tokendrop_dropout=None, freeze_embeddings=True, progress=False)


class GlobalBatches(FinetuneCallback):
    """Records the example ids of every global batch the collator is given."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def on_batching(self, batching):
        batching.collate = _Recording(batching.collate, self.batches)


class _Recording:
    """A collator that notes the example ids of each global batch, then calls the real one."""

    def __init__(self, inner, batches):
        self.inner, self.batches = inner, batches

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, examples):
        self.batches.append([int(ex["idx"]) for ex in examples])
        return self.inner(examples)


def data():
    tokenizer = load_tokenizer()
    rt = load_task("rt_sentiment")
    train = prepare(rt["train"].shuffle(seed=2).select(range(40)), tokenizer, max_length=40)
    dev = prepare(rt["dev"].shuffle(seed=2).select(range(8)), tokenizer, max_length=40)
    return tokenizer, train, dev


TRAINED_ROWS: list[int] = []  # rows of every training forward pass of this process


def model():
    torch.manual_seed(0)
    classifier = load_pretrained(kind="classifier", num_layers=1)
    set_dropout(classifier, 0.0)  # no dropout: the one-process run is the exact reference

    def count_rows(module, args, kwargs):
        if module.training:
            TRAINED_ROWS.append(int(kwargs["input_ids"].shape[0]))

    classifier.register_forward_pre_hook(count_rows, with_kwargs=True)
    return classifier


def run_finetune(out: Path) -> tuple[object, dict]:
    tokenizer, train, dev = data()
    net, recorder = model(), GlobalBatches()
    history = finetune(net, train, dev, FinetuneConfig(**CONFIG), pad_token_id=tokenizer.pad_token_id,
                       callbacks=[recorder])
    return net, {"steps": history.steps, "global_batches": recorder.batches,
                 "padding": [e["slot_tokens"] for e in history.epochs]}


def run_trainer(out: Path) -> tuple[object, dict]:
    from transformers import TrainingArguments

    from tdnotebooks.finetuning import BucketTrainer

    tokenizer, train, dev = data()
    net = model()
    args = TrainingArguments(output_dir=str(out / "trainer"), num_train_epochs=2, per_device_train_batch_size=3,
                             gradient_accumulation_steps=2, learning_rate=2e-4, warmup_steps=0, weight_decay=0.01,
                             lr_scheduler_type="linear", logging_steps=1, save_strategy="no", report_to=[],
                             use_cpu=True, seed=0, data_seed=0, disable_tqdm=True, dataloader_num_workers=0)
    config = FinetuneConfig(**{**CONFIG, "freeze_embeddings": False})
    net.get_input_embeddings().weight.requires_grad_(False)
    trainer = BucketTrainer(model=net, args=args, train_dataset=train, processing_class=tokenizer, td_config=config)
    recorder = _Recording(trainer.batching.collate, [])
    trainer.batching.collate = recorder
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return net, {"steps": [{"loss": loss} for loss in losses], "global_batches": recorder.batches,
                 "global_step": trainer.state.global_step, "lr_factors": trainer.lr_factors}


def main() -> None:
    kind, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    net, record = {"finetune": run_finetune, "trainer": run_trainer}[kind](out)
    rank = int(os.environ.get("RANK", "0"))
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
    record.update(rank=rank, world=int(os.environ.get("WORLD_SIZE", "1")), weights=digest.hexdigest(),
                  trained_rows=TRAINED_ROWS)
    (out / f"rank{rank}.json").write_text(json.dumps(record))
    torch.save({k: v for k, v in net.state_dict().items() if k.startswith(("classifier", "bert.pooler"))},
               out / f"rank{rank}-head.pt")


if __name__ == "__main__":
    main()
