"""The from-scratch transformer and LoRA: shapes, presets, causality, and LoRA checked against
a direct computation of ``W + (alpha / r) B A``; merging keeps the outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mnistlab.errors import MnistlabError
from mnistlab.models.lora import (
    LoRALinear,
    adapter_tensors,
    apply_lora,
    load_adapter,
    merge_lora,
    save_adapter,
)
from mnistlab.models.transformer import (
    PRESETS,
    Classifier,
    GPTModel,
    TransformerConfig,
    count_parameters,
    get_preset,
    patchify,
    unpatchify,
)
from mnistlab.pretraining.mae import MAE

TINY = TransformerConfig(dim=32, depth=2, heads=4, patch_size=7)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_presets_span_tiny_to_about_10m_parameters() -> None:
    counts = {name: count_parameters(Classifier(cfg)) for name, cfg in PRESETS.items()}
    assert counts["tiny"] < 200_000
    assert 9_000_000 < counts["large"] < 12_000_000
    assert list(counts.values()) == sorted(counts.values())
    with pytest.raises(MnistlabError, match="unknown transformer preset"):
        get_preset("huge")
    with pytest.raises(MnistlabError, match="patch_size must divide 28"):
        TransformerConfig(patch_size=5)


def test_patchify_round_trip_and_order() -> None:
    x = torch.arange(2 * 28 * 28, dtype=torch.float32).reshape(2, 1, 28, 28)
    p = patchify(x, 4)
    assert p.shape == (2, 49, 16)
    assert torch.equal(p[0, 1], x[0, 0, :4, 4:8].reshape(-1))  # second patch: top row, right
    assert torch.equal(unpatchify(p, 4), x)


def test_encoder_sees_everything_gpt_sees_only_the_past() -> None:
    torch.manual_seed(0)
    enc = Classifier(TINY).encoder.eval()
    x = torch.rand(1, 1, 28, 28)
    y = x.clone()
    y[0, 0, 21:, 21:] = 0  # change only the last patch
    # Bidirectional: the first token's output depends on the last patch.
    assert not torch.allclose(enc(x)[0, 0], enc(y)[0, 0])
    gpt = GPTModel(TINY, vocab_size=20, num_prefixes=11).eval()
    tokens = torch.randint(0, 20, (1, 17))
    changed = tokens.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 20
    a, b = gpt(tokens), gpt(changed)
    assert a.shape == (1, 17, 20)
    torch.testing.assert_close(a[0, :-1], b[0, :-1])  # causal: the past does not see the change
    assert not torch.allclose(a[0, -1], b[0, -1])


def test_mae_loss_counts_hidden_patches_only() -> None:
    torch.manual_seed(0)
    mae = MAE(TINY, mask_ratio=0.75)
    x = torch.rand(3, 1, 28, 28)
    loss, pred, hidden = mae(x)
    assert pred.shape == (3, 16, 49)
    assert hidden.sum(1).tolist() == [12, 12, 12]
    target = patchify(x, 7)
    manual = ((pred - target) ** 2).mean(-1)[hidden].mean()
    torch.testing.assert_close(loss, manual)


def test_lora_linear_matches_direct_computation() -> None:
    torch.manual_seed(0)
    base = nn.Linear(12, 7)
    lora = LoRALinear(base, rank=3, alpha=6.0)
    with torch.no_grad():
        lora.lora_b.normal_()  # B starts at zero; give it values so the update matters
    x = torch.randn(5, 12)
    w = base.weight + (6.0 / 3) * lora.lora_b @ lora.lora_a  # W + (alpha / r) B A, directly
    expected = x @ w.t() + base.bias
    torch.testing.assert_close(lora(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lora.merged_weight(), w)
    # At initialisation (B = 0) the adapted layer is the pretrained layer.
    fresh = LoRALinear(nn.Linear(12, 7), rank=2, alpha=4.0)
    torch.testing.assert_close(fresh(x), fresh.base(x))


def test_apply_merge_and_adapter_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Classifier(TINY)
    wrapped = apply_lora(model, rank=2, alpha=4.0, targets=["qkv", "fc2"])
    assert len(wrapped) == 4 and all(w.endswith(("qkv", "fc2")) for w in wrapped)
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(adapter_tensors(model))
    assert all("lora_" in k or k.startswith("head.") for k in trainable)
    with torch.no_grad():
        for k, p in model.named_parameters():
            if "lora_b" in k:
                p.normal_(0, 0.1)
    x = torch.rand(4, 1, 28, 28)
    before = model(x)
    # Adapter files hold only the small trainable part and load back into a fresh model.
    _, size = save_adapter(tmp_path / "adapter", model, {"rank": 2})
    full = count_parameters(model) * 4
    assert size < full / 5
    other = Classifier(TINY)
    other.load_state_dict({k: v for k, v in model.state_dict().items() if "lora" not in k}, False)
    other.encoder.load_state_dict(
        {
            k.replace(".base.", "."): v
            for k, v in model.encoder.state_dict().items()
            if "lora" not in k
        }
    )
    apply_lora(other, rank=2, alpha=4.0, targets=["qkv", "fc2"])
    load_adapter(tmp_path / "adapter", other)
    torch.testing.assert_close(other(x), before)
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    with pytest.raises(MnistlabError, match="unknown LoRA target"):
        apply_lora(Classifier(TINY), targets=["conv"])
