"""One contract, run over every registry entry (timm-style)."""
import pytest
import torch

from mobilemed.models import BACKBONES, build_model
from mobilemed.spec import GRAY_MEAN, GRAY_STD, IMAGENET_MEAN, IMAGENET_STD, ModelSpec


def _spec(arch, in_chans=3, task="multiclass", classes=("a", "b", "c")):
    mean, std = ((0.45,), (0.225,)) if in_chans == 1 else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    return ModelSpec(arch=arch, class_names=list(classes), task=task, image_size=64, in_chans=in_chans,
                     mean=mean, std=std)


@pytest.mark.parametrize("arch", sorted(BACKBONES))
def test_forward_backward_gradients(arch):
    torch.manual_seed(0)
    model = build_model(_spec(arch)).train()
    logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 3)
    logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"


@pytest.mark.parametrize("arch", sorted(BACKBONES))
def test_frozen_backbone_gets_no_gradient_and_stays_in_eval(arch):
    model = build_model(_spec(arch, task="binary", classes=("neg", "pos"))).freeze_backbone()
    model.train()
    assert not model.backbone.training and model.head.training
    bn = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model(torch.randn(4, 3, 64, 64)).sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    assert torch.equal(bn.running_mean, before), "frozen BatchNorm statistics drifted"


@pytest.mark.parametrize("arch", sorted(BACKBONES))
def test_one_channel_input_and_any_resolution(arch):
    model = build_model(_spec(arch, in_chans=1)).eval()
    for size in (32, 96):
        assert model(torch.randn(1, 1, size, size)).shape == (1, 3)


@pytest.mark.parametrize("arch", sorted(BACKBONES))
def test_cam_blocks_exist_and_their_map_sizes_are_what_the_cam_layer_choice_assumes(arch):
    from mobilemed.explain.gradcam import block_map_sizes

    model = build_model(_spec(arch)).eval()
    expected = block_map_sizes(arch, 64)  # computed on the meta device
    seen, handles = {}, []
    for name, _ in expected:
        handles.append(model.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: seen.update({name: tuple(o.shape[-2:])})))
    model(torch.randn(1, 3, 64, 64))
    for handle in handles:
        handle.remove()
    assert list(seen.items()) == list(expected) and expected[-1][1] == (2, 2)  # 64 px / 32 = a 2x2 map
    assert len(expected) == len(model.get_submodule(f"backbone.{BACKBONES[arch].cam_blocks}"))


@pytest.mark.parametrize("arch", sorted(BACKBONES))
def test_registry_metadata_names_real_modules(arch):
    """The entry's first conv, classifier and pre-logits exist in the stock model, and surgery uses them."""
    info = BACKBONES[arch]
    stock = info.build()
    first, classifier = stock.get_submodule(info.first_conv), stock.get_submodule(info.classifier)
    assert isinstance(first, torch.nn.Conv2d) and first.in_channels == 3
    assert isinstance(classifier, torch.nn.Linear) and classifier.out_features == 1000  # ImageNet's classes
    assert all(stock.get_submodule(name) is not classifier for name in info.pre_logits)
    assert len(info.mean) == len(info.std) == 3 and info.input_size == 224
    gray = build_model(_spec(arch, in_chans=1))
    assert gray.get_submodule(f"backbone.{info.first_conv}").in_channels == 1
    assert gray.backbone.num_features == classifier.in_features == gray.head[1].in_features
    assert gray.backbone(torch.randn(1, 1, 64, 64)).shape == (1, classifier.in_features)


def test_normalisation_of_a_gray_stem_averages_the_channels():
    info = BACKBONES["mobilenet_v2"]
    assert info.normalisation(3) == (IMAGENET_MEAN, IMAGENET_STD)
    assert info.normalisation(1) == (GRAY_MEAN, GRAY_STD)


def test_gray_stem_matches_rgb_replicated_input():
    """The 1-channel stem is the RGB stem summed over channels: gray g acts like (g, g, g)."""
    from mobilemed.models.build import adapt_stem_to_gray
    from torchvision.models import mobilenet_v2

    torch.manual_seed(0)
    rgb = mobilenet_v2().eval()
    conv_rgb = rgb.features[0][0]
    gray = mobilenet_v2().eval()
    gray.features[0][0].weight.data.copy_(conv_rgb.weight.data)
    adapt_stem_to_gray(gray, BACKBONES["mobilenet_v2"].first_conv)
    x = torch.rand(1, 1, 32, 32)
    assert torch.allclose(conv_rgb(x.repeat(1, 3, 1, 1)), gray.features[0][0](x), atol=1e-5)


def test_imagenet_weights_load_and_classify_like_imagenet(shared):
    """The shared ImageNet weights load into the registry's mobilenet_v2 with every key matching."""
    state = torch.load(shared / "weights/mobilenet_v2_imagenet.pth", weights_only=True)
    model = build_model(_spec("mobilenet_v2", task="binary", classes=("n", "p")), state).eval()
    first = model.backbone.features[0][0].weight
    assert torch.equal(first, state["features.0.0.weight"])
