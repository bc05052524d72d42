"""Generation speed of CMR-TARGET: new tokens per second with the KV cache against without it.

One random-weight CMR-TARGET is built per run; both settings generate exactly `--new-tokens` tokens
(greedy, the end token suppressed by `min_new_tokens`) for the same studies, so they do the same work
apart from the cache. Without the cache every step re-runs the decoder over the whole sequence (and the
video tower's tokens are recomputed from the frames), which is what the cache saves. Times are medians of
`--repeats` runs after one warm-up, the two settings alternating within every repeat so that a change in
background load hits both alike.

Sizes: `demo` is the demo's CMR-TARGET (64 px, 16 frames, 3-layer 192-wide GPT-2, 17 video tokens);
`gpt2` puts a GPT-2-small-sized decoder (12 layers, 768 wide) behind the released model's video tower
shape (ViT-B/16 at 224 px, 64 frames; GPU-sized); `tiny` only checks that the script works.

    python benchmarks/report_generation.py                              # --size demo on the CPU
    python benchmarks/report_generation.py --size gpt2 --device cuda --dtype bfloat16
"""

import argparse
import json
import statistics
import time

import torch

from cmr_clip import CMRTargetConfig, CMRTargetForConditionalGeneration

SIZES = {
    "tiny": (dict(num_frames=4, image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=1,
                  num_attention_heads=2, intermediate_size=64),
             dict(n_embd=32, n_layer=1, n_head=2), 4),
    "demo": (dict(num_frames=16, image_size=64, patch_size=16, hidden_size=128, num_hidden_layers=4,
                  num_attention_heads=4, intermediate_size=256),
             dict(n_embd=192, n_layer=3, n_head=4), 16),
    "gpt2": (dict(num_frames=64), dict(n_embd=768, n_layer=12, n_head=12), 16),
}
VOCAB = 1003


def build(size: str, device: str, dtype: torch.dtype) -> CMRTargetForConditionalGeneration:
    vision, decoder, frame_tokens = SIZES[size]
    config = CMRTargetConfig(
        vision_config=vision,
        text_config=dict(model_type="gpt2", vocab_size=VOCAB, n_positions=512, bos_token_id=0, eos_token_id=0,
                         pad_token_id=1002, **decoder),
        num_frame_tokens=frame_tokens, video_token_id=1000, sentence_token_id=1001,
    )
    torch.manual_seed(0)
    return CMRTargetForConditionalGeneration(config).to(device, dtype).eval()


def timed_generate(model, pixels, new_tokens: int, use_cache: bool) -> float:
    if pixels.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.generate(pixels, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                         use_cache=use_cache)
    if pixels.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    generated = out.shape[1] - model.prompt_ids(1).shape[1]
    if generated != new_tokens:
        raise RuntimeError(f"generated {generated} tokens instead of {new_tokens}")
    return elapsed


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=SIZES, default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--batch", type=int, default=1, help="studies per generate call")
    parser.add_argument("--new-tokens", type=int, default=96, help="tokens generated per study (a typical impression)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model = build(args.size, args.device, dtype)
    vision = model.config.vision_config
    pixels = torch.randn(args.batch, vision.num_frames, 3, vision.image_size, vision.image_size,
                         generator=torch.Generator().manual_seed(0)).to(args.device, dtype)
    with torch.no_grad():
        for use_cache in (True, False):  # warm-up
            timed_generate(model, pixels, min(4, args.new_tokens), use_cache)
        times = {True: [], False: []}
        for _ in range(args.repeats):
            for use_cache in (True, False):
                times[use_cache].append(timed_generate(model, pixels, args.new_tokens, use_cache))
    tokens = args.batch * args.new_tokens
    cached = tokens / statistics.median(times[True])
    uncached = tokens / statistics.median(times[False])
    result = {"size": args.size, "device": args.device, "dtype": args.dtype, "batch": args.batch,
              "new_tokens": args.new_tokens, "threads": torch.get_num_threads(),
              "prompt_tokens": int(model.prompt_ids(1).shape[1]),
              "tokens_per_s_kv_cache": round(cached, 1), "tokens_per_s_no_cache": round(uncached, 1),
              "speedup_kv_cache": round(cached / uncached, 2)}
    print(f"CMR-TARGET generation, size {args.size}, {args.device} {args.dtype}, batch {args.batch}, "
          f"{args.new_tokens} new tokens after a {result['prompt_tokens']}-token prompt (median of {args.repeats})")
    print(f"  with KV cache    {cached:9.1f} tokens/s")
    print(f"  without KV cache {uncached:9.1f} tokens/s   (baseline)")
    print(f"  ratio            {cached / uncached:9.2f}x")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
