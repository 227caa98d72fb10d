import pytest
import torch

from tests.explain import cam_models


@pytest.fixture(scope="session")
def pneumonia_probe(imagenet_cache, shared):
    """A linear probe of ImageNet MobileNetV2 at 64 px on 1000 PneumoniaMNIST training images, and 60
    official test images with their labels (1 = pneumonia). ~10 s."""
    from mobilemed.assets.weights import load_imagenet_state
    from mobilemed.data.transforms import to_model_input

    npz = imagenet_cache / "medmnist" / "pneumoniamnist.npz"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, spec = cam_models.train_pneumonia_probe(npz, load_imagenet_state("mobilenet_v2", download=False))
    finally:
        torch.set_num_threads(threads)
    images, labels = cam_models.pneumonia_images(npz, "test", 60, seed=1)
    return model, spec, to_model_input(images, spec), labels
