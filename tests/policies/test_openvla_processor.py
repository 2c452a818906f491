"""VLAProcessor (images, prompts, augmentation, persistence) and the instruction BPE tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.openvla.processor import IMAGENET_NORM, VLAProcessor
from policies.openvla.tokenizer import action_token_range, config_for_tokenizer, train_instruction_tokenizer


def _images(n=2, v=2, h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, v, h, w, 3), dtype=np.uint8)


def test_pixel_values_are_the_two_normalizations_per_view(make_config, micro_tokenizer):
    cfg = make_config(center_crop=False)
    proc = VLAProcessor(cfg, micro_tokenizer)
    images = _images()
    pv = proc.preprocess_images(images, train=False)
    assert pv.shape == (2, 12, 32, 32) and pv.dtype == torch.float32
    x = torch.from_numpy(images[1, 1]).permute(2, 0, 1).float() / 255  # sample 1, view 1
    mean, std = torch.tensor(IMAGENET_NORM["mean"]).view(3, 1, 1), torch.tensor(IMAGENET_NORM["std"]).view(3, 1, 1)
    torch.testing.assert_close(pv[1, 6:9], (x - mean) / std, atol=0, rtol=0)
    torch.testing.assert_close(pv[1, 9:12], (x - 0.5) / 0.5, atol=0, rtol=0)
    assert torch.equal(proc.preprocess_images(torch.from_numpy(images), train=False), pv)  # torch input too


def test_resize_any_size_and_eval_center_crop(make_config, micro_tokenizer):
    plain = VLAProcessor(make_config(center_crop=False), micro_tokenizer)
    cropped = VLAProcessor(make_config(center_crop=True), micro_tokenizer)
    images = _images(h=60, w=44)
    a, b = plain.preprocess_images(images, train=False), cropped.preprocess_images(images, train=False)
    assert a.shape == b.shape == (2, 12, 32, 32)
    assert not torch.allclose(a, b)
    flat = np.full((1, 2, 50, 50, 3), 200, dtype=np.uint8)  # a constant image stays constant through resize + crop
    out = cropped.preprocess_images(flat, train=False)
    torch.testing.assert_close(out[0, 3:6], torch.full((3, 32, 32), (200 / 255 - 0.5) / 0.5), atol=1e-5, rtol=0)


def test_train_augmentation_is_seeded_and_random(make_config, micro_tokenizer):
    proc = VLAProcessor(make_config(), micro_tokenizer)
    images = _images()
    a = proc.preprocess_images(images, train=True, generator=torch.Generator().manual_seed(1))
    b = proc.preprocess_images(images, train=True, generator=torch.Generator().manual_seed(1))
    c = proc.preprocess_images(images, train=True, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert not torch.allclose(a, proc.preprocess_images(images, train=False))
    raw = a[:, 3:6] * 0.5 + 0.5  # SigLIP copy back in [0, 1]
    assert raw.min() >= -1e-6 and raw.max() <= 1 + 1e-6
    off = VLAProcessor(make_config(image_aug=False, center_crop=False), micro_tokenizer)
    assert torch.equal(off.preprocess_images(images, train=True), off.preprocess_images(images, train=False))


def test_prompts_are_tokenized_with_bos_and_right_padding(make_config, micro_tokenizer):
    proc = VLAProcessor(make_config(), micro_tokenizer)
    out = proc(_images(n=2), ["Open the drawer", "stack the two blocks on the plate"], train=False)
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.dtype == mask.dtype == torch.int64 and (ids[:, 0] == micro_tokenizer.bos_token_id).all()
    n0 = int(mask[0].sum())
    assert mask[0, :n0].all() and not mask[0, n0:].any() and mask[1].all()
    text = micro_tokenizer.decode(ids[0, 1:n0])
    assert text == "In: What action should the robot take to open the drawer?\nOut:"


def test_llama_style_empty_token_is_appended(make_config, micro_tokenizer):
    proc = VLAProcessor(make_config().replace(empty_token_id=7), micro_tokenizer)
    ids, mask = proc.tokenize(["open the drawer", "stack the two blocks on the plate"])
    n0 = int(mask[0].sum())
    assert ids[0, n0 - 1] == 7 and ids[1, -1] == 7


def test_bad_inputs_are_rejected(make_config, micro_tokenizer):
    proc = VLAProcessor(make_config(), micro_tokenizer)
    with pytest.raises(ValueError, match=r"\(B, 2, H, W, 3\)"):
        proc.preprocess_images(_images(v=3), train=False)
    with pytest.raises(ValueError, match="uint8"):
        proc.preprocess_images(_images().astype(np.float32), train=False)
    with pytest.raises(ValueError, match="instructions"):
        proc(_images(n=2), ["only one"], train=False)
    with pytest.raises(ValueError, match="no tokenizer"):
        VLAProcessor(make_config(), None).tokenize(["x"])


def test_save_and_load_round_trip(tmp_path, make_config, micro_tokenizer):
    proc = VLAProcessor(
        make_config(),
        micro_tokenizer,
        image_norm=[{"mean": [0.4] * 3, "std": [0.2] * 3}, {"mean": [0.5] * 3, "std": [0.5] * 3}],
    )
    proc.save_pretrained(tmp_path)
    again = VLAProcessor.from_pretrained(tmp_path)
    assert again.settings == proc.settings
    images = _images()
    a = proc(images, ["open the drawer", "pick up the red cube"], train=False)
    b = again(images, ["open the drawer", "pick up the red cube"], train=False)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FileNotFoundError, match="vla_processor.json"):
        VLAProcessor.from_pretrained(tmp_path / "nowhere")


def test_tokenizer_is_deterministic_and_reserves_action_tokens():
    instructions = ["pick up the red cube", "open the drawer", "pick up the red cube"]
    a = train_instruction_tokenizer(instructions, vocab_size=300, n_action_bins=32)
    b = train_instruction_tokenizer(list(reversed(instructions)), vocab_size=300, n_action_bins=32)
    assert a.get_vocab() == b.get_vocab()
    first, end = action_token_range(a, 32)
    assert end == len(a) and end - first == 32
    assert a.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "<s>", "</s>"]
    prompt = "In: What action should the robot take to pick up the red cube?\nOut:"
    assert len(a(prompt)["input_ids"]) < len(prompt) // 2, "BPE should merge the template and instructions"
    cfg = config_for_tokenizer(_tiny(), a)
    assert cfg.action_token_end_id == end and cfg.llm.vocab_size % 64 == 0 and cfg.llm.vocab_size >= len(a)
    assert cfg.empty_token_id is None and cfg.llm.bos_token_id == 1


def _tiny():
    from policies.openvla.config import preset

    return preset("tiny", n_action_bins=32)


def test_proprio_noise_is_seeded_scaled_and_saved(make_config, micro_tokenizer, tmp_path):
    proprio = torch.zeros(4096, 14)
    assert VLAProcessor(make_config(), micro_tokenizer).augment_proprio(proprio) is proprio  # default: off
    proc = VLAProcessor(make_config(proprio_noise=0.5), micro_tokenizer)
    a = proc.augment_proprio(proprio, torch.Generator().manual_seed(3))
    assert torch.equal(a, proc.augment_proprio(proprio, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, proc.augment_proprio(proprio, torch.Generator().manual_seed(4)))
    assert a.std().item() == pytest.approx(0.5, rel=0.02) and abs(a.mean().item()) < 0.01
    assert torch.equal(proprio, torch.zeros(4096, 14)), "the input is not modified"
    proc.save_pretrained(tmp_path)
    assert VLAProcessor.from_pretrained(tmp_path).settings.proprio_noise == 0.5
    with pytest.raises(ValueError, match="proprio_noise"):
        make_config(proprio_noise=-0.1)


def test_proprio_noise_dims_override_named_dimensions(make_config, micro_tokenizer, tmp_path):
    from envs.layout import ACTION_LAYOUT

    proprio = torch.zeros(8192, 14)
    proc = VLAProcessor(
        make_config(proprio_dim=14, proprio_noise=0.5, proprio_noise_dims=("left_z=0.1", "right_z=0")), micro_tokenizer
    )
    a = proc.augment_proprio(proprio, torch.Generator().manual_seed(3))
    stds = a.std(dim=0)
    left_z, right_z = ACTION_LAYOUT.index("left_z"), ACTION_LAYOUT.index("right_z")
    assert stds[left_z].item() == pytest.approx(0.1, rel=0.05)
    assert stds[right_z].item() == 0.0
    others = [i for i in range(14) if i not in (left_z, right_z)]
    assert torch.allclose(stds[others], torch.full((12,), 0.5), rtol=0.05)
    same = VLAProcessor(make_config(proprio_dim=14, proprio_noise=0.5), micro_tokenizer).augment_proprio(
        proprio, torch.Generator().manual_seed(3)
    )
    assert torch.equal(a[:, others], same[:, others]), "the other dimensions draw exactly what proprio_noise draws"
    proc.save_pretrained(tmp_path)
    assert VLAProcessor.from_pretrained(tmp_path).settings.proprio_noise_dims == ("left_z=0.1", "right_z=0")
    assert VLAProcessor(make_config(proprio_dim=14, proprio_noise_dims=("left_z=0",)), micro_tokenizer).augment_proprio(
        proprio
    ) is (proprio)


@pytest.mark.parametrize("dims", [("left_q=0.1",), ("left_z",), ("left_z=-1",), ("left_z=0.1", "left_z=0.2")])
def test_bad_proprio_noise_dims_name_the_layout(make_config, dims):
    with pytest.raises(ValueError, match=r"proprio_noise_dims: .*NAME=STD.*'left_x'"):
        make_config(proprio_dim=14, proprio_noise_dims=dims)
    with pytest.raises(ValueError, match="needs the 14-D proprio, got 5"):
        make_config(proprio_dim=5, proprio_noise_dims=("left_z=0.1",))
