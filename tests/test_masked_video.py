"""Masked-video pretraining parts: tube masks, patch layout, what the encoder sees, the loss."""

import pytest
import torch

from microexp.models import create_model
from microexp.models.masked_video import MaskedVideoAutoencoder, check_masked_encoder, patchify, tube_mask


def _encoder(**kwargs):
    return create_model("timesformer_tiny", num_classes=0, num_frames=4, input_size=32, patch_size=8, depth=2,
                        embed_dim=32, num_heads=2, drop_path_rate=0.0, **kwargs).eval()


def test_tube_mask_hides_the_ratio_and_keeps_sorted_unique_positions():
    keep, hidden = tube_mask(3, 16, mask_ratio=0.75, generator=torch.Generator().manual_seed(0))
    assert keep.shape == (3, 4) and hidden.shape == (3, 16)
    assert (hidden.sum(1) == 12).all()
    for row, mask in zip(keep, hidden):
        assert row.tolist() == sorted(set(row.tolist()))
        assert not mask[row].any() and mask.sum() + len(row) == 16
    assert not torch.equal(keep[0], keep[1]) or not torch.equal(keep[1], keep[2])  # per-clip masks
    with pytest.raises(ValueError, match="mask_ratio"):
        tube_mask(1, 16, mask_ratio=1.0)


def test_patchify_orders_patches_as_the_encoder_orders_tokens():
    x = torch.zeros(1, 1, 2, 4, 6)
    x[0, 0, 1, 2:4, 4:6] = 1.0  # frame 1, patch row 1, column 2 of a 2x3 grid of 2x2 patches
    patches = patchify(x, (1, 2, 2))
    assert patches.shape == (1, 2, 6, 4)
    nonzero = patches.abs().sum(-1).nonzero().tolist()
    assert nonzero == [[0, 1, 1 * 3 + 2]]
    tubes = patchify(torch.arange(2 * 4 * 4, dtype=torch.float).reshape(1, 1, 2, 4, 4), (2, 2, 2))
    assert tubes.shape == (1, 1, 4, 8)
    assert tubes[0, 0, 0].tolist() == [0, 1, 4, 5, 16, 17, 20, 21]  # a tube spans both frames


def test_the_encoder_never_sees_hidden_patches():
    torch.manual_seed(0)
    encoder = _encoder()
    x = torch.randn(2, 3, 4, 32, 32)
    keep = torch.tensor([[0, 5, 10, 15], [1, 2, 3, 4]])
    tokens = encoder.forward_visible(x, keep)
    assert tokens.shape == (2, 4 * 4, 32)
    changed = x.clone()
    changed[:, :, :, 24:32, 0:8] += 5.0  # position 12 (row 3, column 0): hidden in both clips
    assert torch.allclose(encoder.forward_visible(changed, keep), tokens, atol=1e-6)
    changed[0, :, :, 0:8, 0:8] += 5.0  # position 0: visible in clip 0
    assert not torch.allclose(encoder.forward_visible(changed, keep)[0], tokens[0], atol=1e-3)


def test_loss_is_the_mean_error_over_hidden_patches_only():
    torch.manual_seed(0)
    model = MaskedVideoAutoencoder(_encoder(), mask_ratio=0.75, decoder_dim=16, decoder_depth=1, decoder_heads=2)
    out = model(torch.randn(2, 3, 4, 32, 32), generator=torch.Generator().manual_seed(1))
    error = ((out.prediction - out.target) ** 2).mean(-1)  # (B, T, S)
    hidden = out.hidden[:, None, :].expand_as(error)
    assert torch.allclose(out.loss, error[hidden].mean())
    assert out.hidden.sum() == 2 * 12


def test_difference_target_is_zero_on_a_still_clip_and_pixels_is_not():
    still = torch.randn(1, 3, 1, 32, 32).expand(1, 3, 4, 32, 32).contiguous()
    for target, zero in (("difference", True), ("pixels", False)):
        model = MaskedVideoAutoencoder(_encoder(), target=target, decoder_dim=16, decoder_depth=1, decoder_heads=2)
        values = model.targets(still)
        assert values.shape == (1, 4, 16, 3 * 8 * 8)
        assert bool(torch.allclose(values, torch.zeros_like(values))) is zero


def test_a_few_steps_on_one_batch_lower_the_reconstruction_loss():
    torch.manual_seed(0)
    model = MaskedVideoAutoencoder(_encoder(), mask_ratio=0.75, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    model.train()
    x = torch.randn(2, 3, 4, 32, 32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):  # the same clip and mask every step: the model can memorise the hidden patches
        loss = model(x, generator=torch.Generator().manual_seed(3)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_models_without_the_interface_are_refused_with_their_name():
    with pytest.raises(TypeError, match="tsm_tiny.*lacks token_grid"):
        check_masked_encoder(create_model("tsm_tiny", num_classes=0))


def test_pooled_targets_average_pixel_blocks_and_shrink_the_decoder_output():
    x = torch.randn(1, 3, 4, 32, 32)
    model = MaskedVideoAutoencoder(_encoder(), target_pool=4, decoder_dim=16, decoder_depth=1, decoder_heads=2)
    values = model.targets(x)
    assert values.shape == (1, 4, 16, 3 * 2 * 2)
    block = x[0, :, 0, 0:4, 0:4].mean(dim=(1, 2))  # frame 0, the first 4x4 block of patch 0, per channel
    first = model.targets(x)[0, 0, 0]
    raw = x[0, :, 0, :8, :8].reshape(3, 2, 4, 2, 4).mean(dim=(2, 4)).permute(1, 2, 0).reshape(-1)
    assert torch.allclose((raw - raw.mean()) / raw.std(), first, atol=1e-4)
    assert torch.allclose(raw[:3], block, atol=1e-6)
    assert model(x).prediction.shape == (1, 4, 16, 12)
    with pytest.raises(ValueError, match="target_pool"):
        MaskedVideoAutoencoder(_encoder(), target_pool=3)
