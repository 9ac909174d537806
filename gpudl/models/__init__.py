"""The course's models, one module per family. ``get_model(name)`` builds one by name."""

from gpudl.models.cnn import (
    alexnet,
    basic_block,
    cifar_resnet,
    googlenet,
    inception,
    lenet5,
    mlp,
    nin,
    nin_block,
    resnet18,
    resnet20,
    vgg,
    vgg11,
    vgg16,
    vgg_block,
)
from gpudl.models.linear import logistic_regression, softmax_regression, xor_net

_REGISTRY = {"lenet5": lenet5, "mlp": mlp}
_REGISTRY.update({"alexnet": alexnet, "vgg11": vgg11, "vgg16": vgg16, "nin": nin,
                  "googlenet": googlenet, "resnet18": resnet18, "resnet20": resnet20,
                  "cifar_resnet": cifar_resnet})
_REGISTRY.update({"logistic_regression": logistic_regression,
                  "softmax_regression": softmax_regression, "xor_net": xor_net})

from gpudl.models import autoencoders, gan  # noqa: E402  (generative families: init/apply + losses)

_REGISTRY.update({"autoencoder": autoencoders.undercomplete_ae,
                  "stacked_autoencoder": autoencoders.stacked_ae,
                  "k_sparse_autoencoder": autoencoders.k_sparse_ae,
                  "contractive_autoencoder": autoencoders.contractive_ae,
                  "conv_autoencoder": autoencoders.conv_ae, "vae": autoencoders.vae,
                  "gan_generator": gan.mlp_generator, "gan_discriminator": gan.mlp_discriminator,
                  "dcgan_generator": gan.dcgan_generator,
                  "dcgan_discriminator": gan.dcgan_discriminator,
                  "cgan_generator": gan.cgan_generator, "cgan_discriminator": gan.cgan_discriminator})


def get_model(name: str, **kwargs):
    """Build a model by name (``gpudl train --model NAME``)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {sorted(_REGISTRY)}")
    return _REGISTRY[name](**kwargs)


def available() -> list[str]:
    return sorted(_REGISTRY)


__all__ = ["available", "get_model", "lenet5", "mlp"]
__all__ += ["alexnet", "basic_block", "cifar_resnet", "googlenet", "inception", "nin",
            "nin_block", "resnet18", "resnet20", "vgg", "vgg11", "vgg16", "vgg_block"]
__all__ += ["logistic_regression", "softmax_regression", "xor_net"]
__all__ += ["autoencoders", "gan"]
