"""Recording overhead: counting experts against a bare forward of the model body on the same tokens.

    python benchmarks/bench_record.py                              # the default model on the CPU
    python benchmarks/bench_record.py --model llama2-7b-random --device cuda --dtype bfloat16

Prints the time of a bare forward, of a forward with counting (babel's ExpertCounter), and of the
naive way (plain forward hooks keep every activation, counted after the forward), with the ratios,
tokens per second and, on a GPU, peak memory.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from babel_utils.core.timing import timed
from babel_utils.models import adapters
from babel_utils.models.loading import load_model, resolve_device
from babel_utils.record.counting import ExpertCounter, expert_scores, n_selected, select, zscore


def random_llama(shape: str, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """A random-initialised Llama of a paper model's shape (the weights' values do not change speed)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    shapes = {"llama2-7b-random": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32000)}
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**shapes[shape])).to(dtype)
    return model.eval().requires_grad_(False)


def naive_counts(model, input_ids, labels, n_experts, k):
    """What a user without babel would write: keep every activation with hooks, count afterwards."""
    acts = []
    handles = [down.register_forward_pre_hook(lambda m, a: acts.append(a[0].detach()))
               for down in adapters.down_projs(model)]
    with torch.inference_mode():
        adapters.body(model)(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False)
        for h in handles:
            h.remove()
        labs = [torch.as_tensor(l, device=input_ids.device) for l in labels]
        scores = torch.stack([zscore(expert_scores(a.reshape(-1, a.shape[-1]), lab, n_experts, "abs"))
                              for a, lab in zip(acts, labs)], dim=1)
        chosen = select(scores, k, "cross_layer")
        return torch.bincount(chosen.reshape(-1), minlength=len(labels) * n_experts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--n-experts", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    device = resolve_device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    if args.model.endswith("-random"):
        model = random_llama(args.model, dtype, device)
    else:
        model, _ = load_model(args.model, args.dtype, str(device))
    n_layers, width = adapters.n_layers(model), adapters.d_ff(model)
    rng = np.random.default_rng(0)
    labels = np.stack([rng.permutation(np.arange(width) % args.n_experts) for _ in range(n_layers)])
    vocab = model.get_input_embeddings().weight.shape[0]
    batches = [torch.randint(3, vocab, (args.batch_size, args.seq_len), device=device) for _ in range(args.batches)]
    mask = torch.ones(args.batch_size, args.seq_len, dtype=torch.bool, device=device)
    ones = torch.ones_like(batches[0])
    n_tokens = args.batches * args.batch_size * args.seq_len
    body = adapters.body(model)

    def bare():
        with torch.inference_mode():
            for ids in batches:
                body(input_ids=ids, attention_mask=ones, use_cache=False)  # the same call the counter makes

    def counted():
        counter = ExpertCounter(model, labels, args.n_experts, block=0)
        for ids in batches:
            counter.add_batch(ids, ones, mask)

    k = n_selected(n_layers, args.n_experts, 0.10, "cross_layer")

    def naive():
        for ids in batches:
            naive_counts(model, ids, labels, args.n_experts, k)

    torch.set_grad_enabled(False)
    print(f"model {args.model} ({n_layers} layers, d_ff {width}, {args.n_experts} experts) on {device} "
          f"{args.dtype}, {torch.get_num_threads()} threads; {args.batches} batches of "
          f"{args.batch_size} x {args.seq_len} = {n_tokens} tokens; median of {args.repeats}")
    measured = timed({"bare forward": bare, "babel counting": counted, "naive hooks+count": naive},
                     device, args.repeats)
    results = {name: timing.seconds for name, timing in measured.items()}
    for name, timing in measured.items():
        seconds, peak = timing.seconds, timing.peak_gib
        memory = f", peak memory {peak:.2f} GiB" if peak is not None else ""
        print(f"{name:>18}: {seconds * 1000:9.1f} ms, {n_tokens / seconds:10.0f} tokens/s{memory}")
    for name in ("babel counting", "naive hooks+count"):
        print(f"{name} / bare forward = {results[name] / results['bare forward']:.3f} "
              f"({(results[name] / results['bare forward'] - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    main()
