"""Run by tests/test_training.py under `torch.distributed.run --nproc_per_node 2` (CPU, gloo): each
process embeds its half of a fixed global batch through Accelerate's prepared (DDP) model; the gathered
loss and the synchronised gradients must equal the single-process loss and gradients on the whole batch."""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).parent))
from test_modeling_cmr_clip import tiny_config  # noqa: E402

from cmr_clip import CMRCLIPModel  # noqa: E402
from cmr_clip.modeling.modeling_cmr_clip import contrastive_loss  # noqa: E402
from cmr_clip.training.losses import gathered_contrastive_loss  # noqa: E402


def global_batch():
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(8, 3, 3, 16, 16, generator=generator), torch.randint(1, 60, (8, 7), generator=generator))


def fresh_model():
    torch.manual_seed(0)
    config = tiny_config()
    config.text_config.hidden_dropout_prob = config.text_config.attention_probs_dropout_prob = 0.0
    return CMRCLIPModel(config).train()


def main(out_dir: str) -> None:
    accelerator = Accelerator(cpu=True)
    videos, ids = global_batch()

    reference = fresh_model()
    out = reference(pixel_values_videos=videos, input_ids=ids)
    single_loss = contrastive_loss(out.text_embeds @ out.video_embeds.T * reference.logit_scale_value())
    single_loss.backward()

    model = accelerator.prepare(fresh_model())
    rank, world = accelerator.process_index, accelerator.num_processes
    local = slice(rank * len(videos) // world, (rank + 1) * len(videos) // world)
    out = model(pixel_values_videos=videos[local], input_ids=ids[local])
    loss = gathered_contrastive_loss(out.text_embeds, out.video_embeds, accelerator.unwrap_model(model).logit_scale_value())
    accelerator.backward(loss)

    grad_difference = max(
        (p.grad - q.grad).abs().max().item()
        for p, q in zip(accelerator.unwrap_model(model).parameters(), reference.parameters())
    )
    if accelerator.is_main_process:
        report = {
            "world_size": world,
            "backend": torch.distributed.get_backend(),
            "gathered_loss": loss.item(),
            "single_process_loss": single_loss.item(),
            "max_grad_difference": grad_difference,
        }
        Path(out_dir, "report.json").write_text(json.dumps(report))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
