"""`cmr_clip.embeddings.encode_frames`: uint8 frames -> study embeddings, the same whatever the batch size."""

import torch
from test_zero_shot_support import IMAGE_SIZE, NUM_FRAMES, tiny_config

from cmr_clip import CMRCLIPModel, CMRStudyProcessor
from cmr_clip.embeddings import encode_frames, encode_videos


def test_encode_frames_embeds_each_study_once_whatever_the_batch_size():
    torch.manual_seed(0)
    model = CMRCLIPModel(tiny_config()).eval()
    study_processor = CMRStudyProcessor(num_frames=NUM_FRAMES, image_size=IMAGE_SIZE)
    frames = torch.randint(0, 255, (5, NUM_FRAMES, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    embeds = encode_frames(model, study_processor, frames, batch_size=2)
    assert embeds.shape == (5, model.config.projection_dim) and embeds.device.type == "cpu"
    assert torch.allclose(embeds.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.allclose(embeds, encode_videos(model, study_processor.normalise(frames)), atol=1e-5)
    assert torch.allclose(embeds[3], encode_frames(model, study_processor, frames[3:4])[0], atol=1e-5)
    assert encode_frames(model, study_processor, frames[:0]).shape == (0, model.config.projection_dim)
