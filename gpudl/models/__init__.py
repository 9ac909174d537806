"""The course's models, one module per family. ``get_model(name)`` builds one by name."""

from gpudl.errors import ConfigError
from gpudl.models import (  # noqa: E402  (families with their own losses and helpers)
    autoencoders,
    decoding,
    gan,
    gnn,
    sequence,
    transformer,
    word2vec,
)
from gpudl.models.cnn import (
    alexnet,
    googlenet,
    inception,
    lenet5,
    mlp,
    nin,
    nin_block,
    vgg,
    vgg11,
    vgg16,
    vgg_block,
)
from gpudl.models.linear import logistic_regression, softmax_regression, xor_net
from gpudl.models.resnet import BasicBlock, basic_block, cifar_resnet, resnet18, resnet20, resnet34

# Image classifiers and the input (C, H, W) each is built for by default: `gpudl bench`
# and `gpudl train` take these (random or shipped images of that shape, integer labels).
IMAGE_CLASSIFIERS: dict[str, tuple[int, int, int]] = {
    "lenet5": (1, 28, 28), "mlp": (1, 28, 28), "alexnet": (3, 224, 224),
    "vgg11": (3, 224, 224), "vgg16": (3, 224, 224), "nin": (3, 224, 224),
    "googlenet": (3, 224, 224), "resnet18": (3, 224, 224), "resnet20": (3, 32, 32),
    "cifar_resnet": (3, 32, 32),
}

_REGISTRY = {
    # convolutional and dense classifiers
    "lenet5": lenet5, "mlp": mlp, "alexnet": alexnet, "vgg11": vgg11, "vgg16": vgg16,
    "nin": nin, "googlenet": googlenet, "resnet18": resnet18, "resnet20": resnet20,
    "cifar_resnet": cifar_resnet,
    # linear models
    "logistic_regression": logistic_regression, "softmax_regression": softmax_regression,
    "xor_net": xor_net,
    # autoencoders and GANs
    "autoencoder": autoencoders.undercomplete_ae, "stacked_autoencoder": autoencoders.stacked_ae,
    "k_sparse_autoencoder": autoencoders.k_sparse_ae,
    "contractive_autoencoder": autoencoders.contractive_ae,
    "conv_autoencoder": autoencoders.conv_ae, "vae": autoencoders.vae,
    "gan_generator": gan.mlp_generator, "gan_discriminator": gan.mlp_discriminator,
    "dcgan_generator": gan.dcgan_generator, "dcgan_discriminator": gan.dcgan_discriminator,
    "cgan_generator": gan.cgan_generator, "cgan_discriminator": gan.cgan_discriminator,
    # sequences, attention, graphs, embeddings
    "rnn_classifier": sequence.rnn_classifier, "rnn_regressor": sequence.rnn_regressor,
    "sequence_classifier": sequence.SequenceClassifier, "char_lm": sequence.CharLM,
    "seq2seq": sequence.Seq2Seq, "transformer_classifier": transformer.TransformerClassifier,
    "gpt": transformer.GPT, "gcn": gnn.GCN, "gat": gnn.GAT,
    "graph_classifier": gnn.GraphClassifier, "deep_sets": gnn.DeepSets,
    "skipgram": word2vec.SkipGram,
}


def get_model(name: str, **kwargs):
    """Build a model by name (``gpudl train --model NAME``)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; available: {sorted(_REGISTRY)}")
    return _REGISTRY[name](**kwargs)


def available() -> list[str]:
    return sorted(_REGISTRY)


__all__ = ["available", "get_model", "lenet5", "mlp"]
__all__ += ["alexnet", "basic_block", "cifar_resnet", "googlenet", "inception", "nin",
            "nin_block", "resnet18", "resnet20", "resnet34", "vgg", "vgg11", "vgg16", "vgg_block",
            "BasicBlock"]
__all__ += ["logistic_regression", "softmax_regression", "xor_net"]
__all__ += ["IMAGE_CLASSIFIERS", "autoencoders", "decoding", "gan", "gnn", "sequence",
            "transformer", "word2vec"]
