#!/usr/bin/env python3
"""PyTorch beside TwoBP: the same LLaMa-like model, batch and stages, measured in one session.

The model is llama-small's shape (8 layers, hidden 256, intermediate 688, 8 heads, byte vocabulary
256, sequences of 256) built from Hugging Face `transformers`' Llama layers. PyTorch runs it

  - in one process with 1 and with 2 threads (what a user with one machine runs), and
  - on 2 pipeline ranks with `torch.distributed.pipelining` over gloo, one thread per rank:
    `Schedule1F1B` (one stage per rank) and `ScheduleZBVZeroBubble` (two stages per rank, V-shaped);

and TwoBP (`twobp train`, 2 thread stages) runs 1F1B-1 plain and + 2BP and ZB-V. Every variant
runs once per repeat, in turn, so all see the same machine; the table gives the median tokens/s and
half the range of the repeats. Only the steps after the first are timed.

Run it in the reference environment (torch never enters TwoBP's own runtime):

    scripts/setup-reference-venv.sh                   # torch 2.13.0+cpu from the local wheel folder
    .venv-ref/bin/python benchmarks/peers/torch_pipeline.py --twobp .build/release/twobp --json peers.json
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

try:
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleZBVZeroBubble
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding
except ImportError as error:
    sys.exit(f"torch_pipeline.py needs torch and transformers ({error}); install them into a separate "
             "environment with scripts/setup-reference-venv.sh (pip install torch==2.13.0+cpu transformers) "
             "and run this script with that environment's python")

LLAMA_SMALL = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=8, num_attention_heads=8,
                   num_key_value_heads=8, vocab_size=256, max_position_embeddings=256, rms_norm_eps=1e-5,
                   tie_word_embeddings=False, attn_implementation="sdpa")


class Chunk(torch.nn.Module):
    """Decoder layers `layers` of the model, with the embedding before the first and the final norm
    and lm_head after the last: a pipeline stage, or the whole model."""

    def __init__(self, config, layers, first, last):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(config.vocab_size, config.hidden_size) if first else None
        self.layers = torch.nn.ModuleList(LlamaDecoderLayer(config, i) for i in layers)
        self.rotary = LlamaRotaryEmbedding(config)
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps) if last else None
        self.lm_head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False) if last else None

    def forward(self, x):
        hidden = self.embed_tokens(x) if self.embed_tokens is not None else x
        length = hidden.shape[1]
        positions = torch.arange(length).unsqueeze(0)
        cos_sin = self.rotary(hidden, positions)
        mask = torch.full((length, length), float("-inf")).triu(1)[None, None]
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=cos_sin)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        if self.lm_head is not None:
            return self.lm_head(self.norm(hidden))
        return hidden


def loss_fn(logits, targets):
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def batch(args, step):
    generator = torch.Generator().manual_seed(1000 + step)
    stream = torch.randint(0, 256, (args.batch_size, args.seq_len + 1), generator=generator)
    return stream[:, :-1], stream[:, 1:]


def single_process(args, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = LlamaConfig(**LLAMA_SMALL)
    model = Chunk(config, range(config.num_hidden_layers), first=True, last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for step in range(args.steps):
        tokens, targets = batch(args, step)
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = 0.0
        for micro_tokens, micro_targets in zip(tokens.chunk(args.micro_batches), targets.chunk(args.micro_batches)):
            micro_loss = loss_fn(model(micro_tokens), micro_targets) / args.micro_batches
            micro_loss.backward()
            loss += micro_loss.item()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return args.batch_size * args.seq_len / statistics.mean(times[1:])


def pipeline_rank(rank, args, schedule_name, port, result_file):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    config = LlamaConfig(**LLAMA_SMALL)
    layers = config.num_hidden_layers
    if schedule_name == "zbv":
        # Four stages of two layers; rank 0 holds stages 0 and 3, rank 1 stages 1 and 2 (the V).
        stage_ids = [rank, 3 - rank]
        per_stage = layers // 4
    else:
        stage_ids = [rank]
        per_stage = layers // 2
    stage_count = 4 if schedule_name == "zbv" else 2
    stages = []
    for stage_id in stage_ids:
        chunk = Chunk(config, range(stage_id * per_stage, (stage_id + 1) * per_stage),
                      first=stage_id == 0, last=stage_id == stage_count - 1)
        stages.append(PipelineStage(chunk, stage_id, stage_count, torch.device("cpu")))
    parameters = [p for stage in stages for p in stage.submod.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    if schedule_name == "zbv":
        schedule = ScheduleZBVZeroBubble(stages, n_microbatches=args.micro_batches, loss_fn=loss_fn)
    else:
        schedule = Schedule1F1B(stages[0], n_microbatches=args.micro_batches, loss_fn=loss_fn)
    holds_first = any(stage.is_first for stage in stages)
    holds_last = any(stage.is_last for stage in stages)
    times = []
    for step in range(args.steps):
        tokens, targets = batch(args, step)
        dist.barrier()
        start = time.perf_counter()
        optimizer.zero_grad()
        kwargs = {}
        if holds_last:
            kwargs["target"] = targets
        if holds_first:
            schedule.step(tokens, **kwargs)
        else:
            schedule.step(**kwargs)
        optimizer.step()
        dist.barrier()
        times.append(time.perf_counter() - start)
    if rank == 0:
        with open(result_file, "w") as f:
            json.dump(args.batch_size * args.seq_len / statistics.mean(times[1:]), f)
    dist.destroy_process_group()


def pipeline(args, schedule_name, port):
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        mp.spawn(pipeline_rank, args=(args, schedule_name, port, result.name), nprocs=2, join=True)
        with open(result.name) as f:
            return json.load(f)


def twobp(args, schedule, two_bp):
    with tempfile.TemporaryDirectory() as folder:
        summary = os.path.join(folder, "summary.json")
        command = [args.twobp, "train", "--model", "llama-small", "--stages", "2", "--schedule", schedule,
                   "--micro-batches", str(args.micro_batches), "--batch-size", str(args.batch_size),
                   "--seq-len", str(args.seq_len), "--steps", str(args.steps), "--eval-every", "1000000",
                   "--summary", summary]
        if two_bp:
            command.append("--2bp")
        completed = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if completed.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{completed.stderr}")
        with open(summary) as f:
            return args.batch_size * args.seq_len / json.load(f)["step_time_seconds"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--twobp", help="the twobp binary (default: .build/release/twobp); 'none' skips TwoBP",
                        default=".build/release/twobp")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro-batches", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="steps per run; the first is not timed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the measurements here")
    args = parser.parse_args()
    if args.steps < 2 or args.repeats < 1 or args.batch_size % args.micro_batches:
        parser.error("--steps must be at least 2, --repeats at least 1, and --micro-batches must divide --batch-size")
    if args.twobp != "none" and not os.access(args.twobp, os.X_OK):
        parser.error(f"{args.twobp} is not an executable twobp (build it: swift build -c release --product twobp)")

    variants = {
        "torch, one process, 1 thread": lambda: single_process(args, 1),
        "torch, one process, 2 threads": lambda: single_process(args, 2),
        "torch pipelining, 2 ranks, Schedule1F1B": lambda: pipeline(args, "1f1b", 29511),
        "torch pipelining, 2 ranks, ScheduleZBVZeroBubble": lambda: pipeline(args, "zbv", 29512),
    }
    if args.twobp != "none":
        variants.update({
            "twobp, 2 stages, 1f1b-1": lambda: twobp(args, "1f1b-1", False),
            "twobp, 2 stages, 1f1b-1 + 2BP": lambda: twobp(args, "1f1b-1", True),
            "twobp, 2 stages, zb-v": lambda: twobp(args, "zb-v", False),
        })
    rates = {name: [] for name in variants}
    for repeat in range(1, args.repeats + 1):
        for name, run in variants.items():
            rates[name].append(run())
            print(f"repeat {repeat}/{args.repeats} {name}: {rates[name][-1]:.0f} tokens/s", flush=True)
    print(f"\nllama-small, batch {args.batch_size} x {args.seq_len}, {args.micro_batches} micro-batches, "
          f"median of {args.repeats}; torch {torch.__version__}, {torch.get_num_threads()} default threads")
    for name, values in rates.items():
        median = statistics.median(values)
        spread = 50 * (max(values) - min(values)) / median
        print(f"  {name:<50} {median:7.0f} tokens/s  ±{spread:.1f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "torch": torch.__version__, "tokens_per_second": rates}, f, indent=2)


if __name__ == "__main__":
    main()
