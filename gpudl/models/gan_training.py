"""Training GANs: the two players' losses for ``gd.fit``, the :class:`GAN` layer that holds
both networks, and the single step :func:`gan_train_step` built on the same losses.

Re-exported by :mod:`gpudl.models.gan`. ``gd.fit(GAN(g, d, latent_dim), x_real,
loss_fn=gan.losses(), optimizer={"discriminator": ..., "generator": ...})`` trains both
networks with a :class:`gpudl.train.PlayerStep`: params, state and optimizer state are
dicts ``{"generator": ..., "discriminator": ...}``, so checkpoints and exact resume work
as for any model; the logs are ``discriminator_loss``, ``generator_loss`` and the
discriminator's mean probabilities ``d_real``/``d_fake``.

Example:
    >>> import numpy as np, gpudl as gd
    >>> from gpudl import optim
    >>> from gpudl.models import gan
    >>> model = gan.GAN(gan.mlp_generator(2, hidden=(8,), output=None),
    ...                 gan.mlp_discriminator((8,)), latent_dim=4)
    >>> x = np.random.default_rng(0).normal(size=(32, 2)).astype(np.float32)
    >>> h = gd.fit(model, x, loss_fn=model.losses(), epochs=1, batch_size=16, verbose=0,
    ...            optimizer={"discriminator": optim.adam(1e-3), "generator": optim.adam(1e-3)})
    >>> sorted(h.history), sorted(h.params)
    (['d_fake', 'd_real', 'discriminator_loss', 'generator_loss'], ['discriminator', 'generator'])
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from gpudl import functional as F
from gpudl import ops
from gpudl import random as gdr
from gpudl.autodiff import unbox_all
from gpudl.backend import module_of
from gpudl.nn.base import Layer, array_device
from gpudl.train.custom import PlayerStep
from gpudl.tree import tree_leaves


class GANState(NamedTuple):
    """Everything a GAN training loop carries: params, optimizer states, layer states."""

    gen_params: Any
    disc_params: Any
    gen_opt_state: Any
    disc_opt_state: Any
    gen_state: Any
    disc_state: Any

    def trees(self) -> tuple[dict, dict, dict]:
        """``(params, state, opt_state)`` as the dicts ``gd.fit`` and :class:`GAN` use."""
        def pair(g, d):
            return {"generator": g, "discriminator": d}
        return (pair(self.gen_params, self.disc_params), pair(self.gen_state, self.disc_state),
                pair(self.gen_opt_state, self.disc_opt_state))

    @classmethod
    def from_trees(cls, params: dict, state: dict, opt_state: dict) -> GANState:
        """The inverse of :meth:`trees` (e.g. from a ``gd.fit`` History)."""
        return cls(params["generator"], params["discriminator"], opt_state["generator"],
                   opt_state["discriminator"], state["generator"], state["discriminator"])


def _inputs(x, labels):
    return x if labels is None else (x, labels)


def latent(key, n: int, latent_dim: int, like=None):
    """``z ~ N(0, I)`` of shape (n, latent_dim), in ``like``'s dtype and on its device.

    ``key`` is a key or an int seed (``gd.random.as_key``).
    """
    key = gdr.as_key(key, "models.gan.latent")
    raw = None if like is None else unbox_all(like)
    return gdr.normal(key, (int(n), int(latent_dim)),
                      dtype=np.float32 if raw is None else raw.dtype,
                      device=None if like is None else array_device(like))


class GAN(Layer):
    """A generator and a discriminator as one layer, for ``gd.fit``.

    Params and state are ``{"generator": ..., "discriminator": ...}``; ``init(key, x)``
    initialises both from a batch of real data (``(x, labels)`` for a conditional pair;
    ``x`` alone will do, as ``gd.fit`` passes it), as :func:`gan_init`; ``apply(params,
    state, z)`` is the generator (``(z, labels)`` when conditional). :meth:`losses`
    gives the two players' ``loss_fn`` for ``gd.fit``. ``conditional`` defaults to
    whether the generator is a :class:`Conditional`.
    """

    base_name = "gan"

    def __init__(self, generator: Layer, discriminator: Layer, latent_dim: int,
                 conditional: bool | None = None, name: str | None = None):
        super().__init__(name)
        if conditional is None:
            from gpudl.models.gan import Conditional

            conditional = isinstance(generator, Conditional)
        self.generator, self.discriminator = generator, discriminator
        self.latent_dim, self.conditional = int(latent_dim), bool(conditional)

    def split(self, batch) -> tuple[Any, Any]:
        """``(real images, labels or None)`` of a batch (labels only when conditional)."""
        if isinstance(batch, tuple | list):
            return batch[0], (batch[1] if self.conditional else None)
        return batch, None

    def init(self, key, x):
        x_real, labels = self.split(x)
        if self.conditional and labels is None:  # init needs the labels' shape only
            labels = module_of(unbox_all(x_real)).zeros(x_real.shape[0], dtype=np.int64)
        kg, kd = gdr.split(key)
        z = latent(gdr.fold_in(kg, 1), x_real.shape[0], self.latent_dim, like=x_real)
        gp, gs = self.generator.init(kg, _inputs(z, labels))
        dp, ds = self.discriminator.init(kd, _inputs(x_real, labels))
        return {"generator": gp, "discriminator": dp}, {"generator": gs, "discriminator": ds}

    def apply(self, params, state, x, *, train=False, key=None):
        y, gs = self.generator.apply(params["generator"], state["generator"], x, train=train,
                                     key=key)
        return y, {**state, "generator": gs}

    def children(self) -> list[tuple[str, Layer]]:
        return [("generator", self.generator), ("discriminator", self.discriminator)]

    def trainable_mask(self, params):
        return {name: layer.trainable_mask(params[name]) for name, layer in self.children()}

    def _fake(self, params, state, x_real, labels, kz, kg):
        z = latent(kz, x_real.shape[0], self.latent_dim, like=x_real)
        return self.generator.apply(params["generator"], state["generator"],
                                    _inputs(z, labels), train=True, key=kg)

    def losses(self, non_saturating: bool = True) -> dict:
        """``{"discriminator": d_loss, "generator": g_loss}``, in the order they step.

        Discriminator (key split in four: z, generator, real, fake): ``-log D(x) - log(1 -
        D(G(z)))``; the generator's params are data in this player's gradient. Real and
        fake go through separately, as in the DCGAN reference, so each BatchNorm batch is
        all-real or all-fake. Generator (key split in three: z, generator,
        discriminator): ``-log D(G(z))`` (non-saturating, or ``log(1 - D(G(z)))``) on
        fresh ``z`` through the discriminator the first player has just updated.
        """

        def discriminator_loss(params, state, batch, key):
            x_real, labels = self.split(batch)
            kz, kg, kr, kf = gdr.split(key, 4)
            fake, gs = self._fake(params, state, x_real, labels, kz, kg)
            dp, ds = params["discriminator"], state["discriminator"]
            real_l, ds = self.discriminator.apply(dp, ds, _inputs(x_real, labels), train=True,
                                                  key=kr)
            fake_l, ds = self.discriminator.apply(dp, ds, _inputs(fake, labels), train=True,
                                                  key=kf)
            probs = {"d_real": ops.mean(ops.sigmoid(unbox_all(real_l))),
                     "d_fake": ops.mean(ops.sigmoid(unbox_all(fake_l)))}
            return (F.gan_discriminator_loss(real_l, fake_l),
                    ({**state, "generator": gs, "discriminator": ds}, probs))

        def generator_loss(params, state, batch, key):
            x_real, labels = self.split(batch)
            kz, kg, kd = gdr.split(key, 3)
            fake, gs = self._fake(params, state, x_real, labels, kz, kg)
            logits, _ = self.discriminator.apply(params["discriminator"], state["discriminator"],
                                                 _inputs(fake, labels), train=True, key=kd)
            return (F.gan_generator_loss(logits, non_saturating=non_saturating),
                    ({**state, "generator": gs}, None))

        return {"discriminator": discriminator_loss, "generator": generator_loss}


def gan_init(key, gen: Layer, disc: Layer, gen_opt, disc_opt, x_example, latent_dim: int,
             labels_example=None) -> GANState:
    """Initialise both networks (from a batch of real data) and both optimizers.

    ``key`` is a key or an int seed (``gd.random.as_key``).
    """
    key = gdr.as_key(key, "models.gan.gan_init")
    model = GAN(gen, disc, latent_dim, conditional=labels_example is not None)
    params, state = model.init(key, _inputs(x_example, labels_example))
    return GANState(params["generator"], params["discriminator"],
                    gen_opt.init(params["generator"]), disc_opt.init(params["discriminator"]),
                    state["generator"], state["discriminator"])


def generate(gen: Layer, gen_params, key, n: int, latent_dim: int, labels=None, gen_state=None,
             like=None):
    """``n`` samples from the generator in evaluation mode (BatchNorm running statistics).

    ``key`` is a key or an int seed (``gd.random.as_key``).
    """
    key = gdr.as_key(key, "models.gan.generate")
    z = latent(key, n, latent_dim, like=like if like is not None else tree_leaves(gen_params)[0])
    return gen.apply(gen_params, gen_state or {}, _inputs(z, labels))[0]


def gan_train_step(gen: Layer, disc: Layer, gen_opt, disc_opt, state: GANState, x_real, key, *,
                   latent_dim: int, labels=None, non_saturating: bool = True
                   ) -> tuple[GANState, dict[str, float]]:
    """One discriminator update then one generator update; pure (returns a new state).

    The step ``gd.fit`` runs for a :class:`GAN` (a :class:`gpudl.train.PlayerStep` over
    :meth:`GAN.losses`), on one batch: the discriminator minimises ``-log D(x) - log(1 -
    D(G(z)))`` with G's samples held fixed, then the generator minimises ``-log D(G(z))``
    (non-saturating) on fresh ``z`` through the *updated* discriminator, changing only
    G's params. For a conditional pair, ``labels`` conditions both the real batch and
    the generated one. Metrics: both losses and the discriminator's mean probabilities
    on real and fake samples. Player ``j`` (0: discriminator, 1: generator) steps with
    ``fold_in(key, j)``; ``key`` is a key or an int seed (``gd.random.as_key``).
    """
    key = gdr.as_key(key, "models.gan.gan_train_step")
    model = GAN(gen, disc, latent_dim, conditional=labels is not None)
    step = PlayerStep(model.losses(non_saturating), {"discriminator": disc_opt,
                                                     "generator": gen_opt})
    params, layer_state, opt_state = state.trees()
    r = step(params, layer_state, opt_state, key, _inputs(x_real, labels))
    probs = r.aux["discriminator"]
    metrics = {"d_loss": float(r.loss["discriminator"]), "g_loss": float(r.loss["generator"]),
               "d_real": float(probs["d_real"]), "d_fake": float(probs["d_fake"])}
    return GANState.from_trees(r.params, r.state, r.opt_state), metrics


__all__ = ["GANState", "GAN", "latent", "gan_init", "generate", "gan_train_step"]
