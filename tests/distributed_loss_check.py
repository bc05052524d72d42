"""Run by tests/test_training.py under `torch.distributed.run --nproc_per_node 2` (CPU, gloo): each
process embeds its half of a fixed global batch through Accelerate's prepared (DDP) model; the gathered
loss and the synchronised gradients must equal the single-process loss and gradients on the whole batch; so
must the sentence-level loss, whose positives cross processes and whose processes hold different numbers of
sentences and key tables of different widths."""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).parent))
from test_modeling_cmr_clip import tiny_config  # noqa: E402

from cmr_clip import CMRCLIPModel  # noqa: E402
from cmr_clip.modeling.modeling_cmr_clip import contrastive_loss  # noqa: E402
from cmr_clip.training.losses import gathered_contrastive_loss, sentence_contrastive_loss, sentence_separation_loss  # noqa: E402


def global_batch():
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(8, 3, 3, 16, 16, generator=generator), torch.randint(1, 60, (8, 7), generator=generator))


# Study i drew sentence 100 + i, and studies 0-3 (process 0's) also 200 + i: 8 sentences there, 4 in process 1.
# Each impression also says the sentence 100 + (i + 4) % 8, which lies in the other process's half. Studies 0-3
# list three sentences, studies 4-7 two: key tables of width 3 and 2.
DRAWN_FROM = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7])
SENTENCE_KEYS = torch.tensor([100, 200, 101, 201, 102, 202, 103, 203, 104, 105, 106, 107])
STUDY_KEYS = torch.tensor([[100 + i, 100 + (i + 4) % 8] + ([200 + i] if i < 4 else [-1]) for i in range(8)])


def both_losses(text, video, scale, local=slice(None), gathered=False):
    """The contrastive loss plus half the sentence loss and a quarter of the sentence separation, the sentences
    made from the local studies' texts."""
    studies = torch.arange(8)[local]
    rows = torch.isin(DRAWN_FROM, studies)
    sentences = torch.nn.functional.normalize(text[DRAWN_FROM[rows] - studies[0]] + 0.1 * SENTENCE_KEYS[rows, None] % 7, dim=-1)
    study_keys = STUDY_KEYS[local]
    if gathered and studies[0] == 4:
        study_keys = study_keys[:, :2]  # this process's table is narrower
    contrastive = (gathered_contrastive_loss(text, video, scale) if gathered
                   else contrastive_loss(text @ video.T * scale))
    return (contrastive + 0.5 * sentence_contrastive_loss(sentences, video, SENTENCE_KEYS[rows], study_keys, scale)
            + 0.25 * sentence_separation_loss(sentences, SENTENCE_KEYS[rows] % 3))  # keys % 3: repeats across processes


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
    single_loss = both_losses(out.text_embeds, out.video_embeds, reference.logit_scale_value())
    single_loss.backward()

    model = accelerator.prepare(fresh_model())
    rank, world = accelerator.process_index, accelerator.num_processes
    local = slice(rank * len(videos) // world, (rank + 1) * len(videos) // world)
    out = model(pixel_values_videos=videos[local], input_ids=ids[local])
    loss = both_losses(out.text_embeds, out.video_embeds, accelerator.unwrap_model(model).logit_scale_value(), local,
                       gathered=True)
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
            "max_grad": max(p.grad.abs().max().item() for p in reference.parameters()),
        }
        Path(out_dir, "report.json").write_text(json.dumps(report))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
