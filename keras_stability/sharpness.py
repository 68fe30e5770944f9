"""Curvature telemetry: the loss Hessian's top eigenvalue (sharpness) and the step size's stability limit.

Gradient descent with learning rate η is stable on a quadratic only while its sharpness λ_max(H)
stays below 2/η; Cohen et al. (2021) found full-batch training rising to that limit and hovering
there ("edge of stability"). For Adam the quantity that hovers is the preconditioned sharpness
λ_max(P⁻¹H), at (2 + 2β₁) / ((1 − β₁)·η), 38/η for β₁ = 0.9 (Cohen et al., 2022).

`top_hessian_eigenvalue` measures either by power iteration on Hessian-vector products (two nested
gradient tapes: each iteration costs about one forward and two backward passes over the batch, the
price of two training steps); `SharpnessMonitor` measures it every K steps during `fit` and logs it
beside `stability_limit(optimizer)`.
"""

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from keras_stability.optimizer import StabilizedOptimizer, is_loss_scaled

SHARPNESS_LOGS = ("sharpness", "sharpness_limit")


def core_optimizer(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """The optimizer that owns the update rule: inside a `StabilizedOptimizer` and a loss scaling."""
    if isinstance(optimizer, StabilizedOptimizer):
        return optimizer.core_optimizer
    return optimizer.inner_optimizer if is_loss_scaled(optimizer) else optimizer


def is_adam(optimizer: keras.optimizers.Optimizer) -> bool:
    return isinstance(core_optimizer(optimizer), keras.optimizers.Adam)  # AdamW derives from Adam


def adam_preconditioner(optimizer: keras.optimizers.Optimizer, variables: list) -> list[tf.Tensor]:
    """Adam's diagonal preconditioner P, one tensor per variable, as of its last step t.

    Cohen et al. (2022) write Adam's step as w ← w − η·P⁻¹m̂ with P = (1 − β₁ᵗ)·(√v̂ + ε),
    v̂ = v / (1 − β₂ᵗ). Keras adds ε to √v rather than to √v̂, so here P = (1 − β₁ᵗ)·(√v + ε) / √(1 − β₂ᵗ):
    the matrix Keras's update divides by. (AMSGrad's running maximum of v is not used.)

    Before the first step (t = 0) P is 0/0, and the preconditioned sharpness NaN.

    Raises:
        ValueError: if the optimizer is not Adam (or AdamW) or is not built.
    """
    core = core_optimizer(optimizer)
    if not isinstance(core, keras.optimizers.Adam) or not core.built:
        raise ValueError(
            "The preconditioned sharpness needs the second moment of a built Adam (or AdamW) optimizer; "
            "use preconditioned=False for other optimizers. "
            f"Received: optimizer {type(core).__name__} (built={core.built})."
        )

    def of(variable):
        # In the variable's dtype, as Keras computes its update.
        t = tf.cast(core.iterations, variable.dtype)
        factor = (1 - tf.pow(tf.cast(core.beta_1, variable.dtype), t)) / tf.sqrt(
            1 - tf.pow(tf.cast(core.beta_2, variable.dtype), t)
        )
        velocity = core._velocities[core._get_variable_index(variable)]
        return factor * (tf.sqrt(tf.convert_to_tensor(velocity)) + tf.cast(core.epsilon, variable.dtype))

    return [of(v) for v in variables]


def stability_limit(optimizer: keras.optimizers.Optimizer) -> tf.Tensor:
    """The sharpness beyond which the optimizer's step diverges on a quadratic, at its current learning rate.

    - SGD: 2/η; with heavy-ball momentum β, (2 + 2β)/η; with Nesterov momentum, (2 + 2β)/(η(1 + 2β))
      (Cohen et al. 2021, appendix);
    - Adam, AdamW: the limit of the *preconditioned* sharpness, (2 + 2β₁)/((1 − β₁)·η) (Cohen et al. 2022).

    Raises:
        ValueError: for other optimizers.

    Example:
        >>> import keras, keras_stability as ks
        >>> sgd, adam = ks.stability_limit(keras.optimizers.SGD(0.1)), ks.stability_limit(keras.optimizers.Adam(0.01))
        >>> round(float(sgd), 3), round(float(adam), 3)
        (20.0, 3800.0)
    """
    core = core_optimizer(optimizer)
    learning_rate = tf.cast(core.learning_rate, tf.float32)
    if isinstance(core, keras.optimizers.Adam):
        beta_1 = float(core.beta_1)
        return (2.0 + 2.0 * beta_1) / ((1.0 - beta_1) * learning_rate)
    if isinstance(core, keras.optimizers.SGD):
        beta = float(core.momentum)
        if core.nesterov:
            return (2.0 + 2.0 * beta) / (learning_rate * (1.0 + 2.0 * beta))
        return (2.0 + 2.0 * beta) / learning_rate
    raise ValueError(
        "stability_limit knows SGD (with or without momentum), Adam and AdamW. "
        f"Received: optimizer {type(core).__name__}."
    )


def hessian_vector_product(loss_fn: Callable[[], tf.Tensor], variables: list, vectors: list) -> list[tf.Tensor]:
    """H·v for the Hessian H of `loss_fn()` with respect to `variables` (back-over-back)."""
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = loss_fn()
        gradients = inner.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        directional = tf.add_n([tf.reduce_sum(g * tf.stop_gradient(v)) for g, v in zip(gradients, vectors)])
    return outer.gradient(directional, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def power_iteration(matvec: Callable[[list], list], initial: list, iterations: int, tolerance: float) -> tf.Tensor:
    """The eigenvalue of largest magnitude of the symmetric operator `matvec`, by power iteration.

    Stops after `iterations` products, or earlier when the Rayleigh quotient moves by at most
    `tolerance` relative to itself between two iterations.
    """
    dtype = initial[0].dtype

    def dot(a, b):
        return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(a, b)])

    def normalized(vectors):
        # max(‖v‖, tiny) only prevents division by zero (a zero Hessian gives the eigenvalue 0).
        norm = tf.maximum(tf.sqrt(dot(vectors, vectors)), tf.constant(1e-30, dtype))
        return [v / norm for v in vectors]

    def moving(step, vectors, eigenvalue, previous):
        converged = tf.abs(eigenvalue - previous) <= tolerance * tf.abs(eigenvalue)
        return tf.logical_and(step < iterations, tf.logical_or(step < 2, tf.logical_not(converged)))

    def iterate(step, vectors, eigenvalue, previous):
        product = matvec(vectors)
        return step + 1, normalized(product), dot(vectors, product), eigenvalue

    zero = tf.constant(0.0, dtype)
    _, _, eigenvalue, _ = tf.while_loop(moving, iterate, (tf.constant(0), normalized(initial), zero, zero))
    return eigenvalue


def top_hessian_eigenvalue(
    model: keras.Model,
    x: Any,
    y: Any,
    loss: Any = None,
    sample_weight: Any = None,
    preconditioner: list | None = None,
    iterations: int = 20,
    tolerance: float = 1e-3,
    seed: int = 0,
    training: bool = False,
) -> tf.Tensor:
    """The top eigenvalue of the loss Hessian on one batch (the sharpness), by power iteration.

    With `preconditioner` P (a positive diagonal, one tensor per trainable variable, such as
    `adam_preconditioner`), the top eigenvalue of P⁻¹H instead, computed on the symmetric
    P^(−½)·H·P^(−½) that has the same eigenvalues. Power iteration finds the eigenvalue of largest
    magnitude: the top one unless the Hessian's most negative eigenvalue is larger in magnitude
    (early in training, rarely; never near the edge of stability).

    Runs eagerly or inside a `tf.function` (also with `jit_compile=True`); it reads the weights and
    changes nothing.

    Args:
        model: the Keras model; the Hessian is taken with respect to its trainable variables.
        x, y, sample_weight: one batch (the whole training set for full-batch sharpness).
        loss: a Keras loss (name, instance or function of `(y_true, y_pred)`); `None` uses the compiled
            model's `compute_loss` (its compiled loss plus regularisation losses).
        preconditioner: `None`, or a positive diagonal P per trainable variable.
        iterations: at most this many Hessian-vector products.
        tolerance: stop when the estimate moves by at most this fraction of itself in one iteration.
        seed: seed of the random starting vector (stateless: the same seed, the same estimate).
        training: the model's `training` flag for the forward passes (False: no dropout noise).

    Returns:
        A scalar tensor of the variables' dtype.

    References:
        Cohen, Kaur, Li, Kolter & Talwalkar, "Gradient Descent on Neural Networks Typically Occurs at
        the Edge of Stability", ICLR 2021. Cohen et al., "Adaptive Gradient Methods at the Edge of
        Stability", arXiv:2207.14484, 2022.

    Example:
        >>> import keras, numpy as np, keras_stability as ks
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
        >>> x = np.array([[3.0, 0.0], [0.0, 1.0]], "float32")
        >>> # Mean squared error of a linear model: H = 2·XᵀX/n = diag(9, 1), whatever the weights.
        >>> round(float(ks.top_hessian_eigenvalue(model, x, np.zeros((2, 1)), loss="mse", iterations=50)), 3)
        9.0
    """
    variables = list(model.trainable_variables)
    loss_function = None if loss is None else keras.losses.get(loss)

    def loss_fn():
        y_pred = model(x, training=training)
        if loss_function is None:
            return model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        if isinstance(loss_function, keras.losses.Loss):
            return loss_function(y, y_pred, sample_weight)
        # A plain function gives one loss per sample: reduce it as `compile` would (the batch mean).
        losses = loss_function(y, y_pred)
        return tf.reduce_mean(losses if sample_weight is None else losses * tf.cast(sample_weight, losses.dtype))

    if preconditioner is None:

        def matvec(vectors):
            return hessian_vector_product(loss_fn, variables, vectors)

    else:
        inverse_roots = [tf.math.rsqrt(tf.cast(p, v.dtype)) for p, v in zip(preconditioner, variables)]

        def matvec(vectors):
            scaled = [d * v for d, v in zip(inverse_roots, vectors)]
            return [d * hv for d, hv in zip(inverse_roots, hessian_vector_product(loss_fn, variables, scaled))]

    initial = [
        tf.random.stateless_normal(v.shape, seed=[seed, index], dtype=v.dtype) for index, v in enumerate(variables)
    ]
    return power_iteration(matvec, initial, iterations, tolerance)


class SharpnessMonitor(keras.callbacks.Callback):
    """Measures the sharpness on a fixed batch every `every_n_steps` training steps, beside its limit.

    After each measured batch the batch logs get `sharpness` (for Adam and AdamW the preconditioned
    sharpness λ_max(P⁻¹H), otherwise λ_max(H)) and `sharpness_limit` (`stability_limit`: 2/η for
    plain SGD, 38/η for Adam with β₁ = 0.9), so TensorBoard with `update_freq="batch"` plots them; the
    epoch logs (hence `History`) get the epoch's last measurement. Every measurement is also kept in
    `records` as `{"step", "sharpness", "sharpness_limit"}`. Off the measured steps the callback costs
    nothing; a measurement costs about `2·iterations` training steps on `x` (see the benchmark).

    Args:
        x, y: the batch to measure on (for full-batch training, the training set).
        every_n_steps: measure when the optimizer's step count reaches a multiple of this.
        preconditioned: `None` (Adam's preconditioner for Adam and AdamW, none otherwise), or a bool.
        loss, sample_weight, iterations, tolerance, seed: as in `top_hessian_eigenvalue`.
        jit_compile: compile the measurement with XLA.

    Example:
        >>> import keras, numpy as np, keras_stability as ks
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
        >>> model.compile(keras.optimizers.SGD(0.1), "mse")
        >>> x, y = np.array([[3.0, 0.0], [0.0, 1.0]], "float32"), np.zeros((2, 1))
        >>> monitor = ks.SharpnessMonitor(x, y, every_n_steps=1, iterations=50)
        >>> history = model.fit(x, y, epochs=2, verbose=0, callbacks=[monitor])
        >>> [round(s, 3) for s in history.history["sharpness"]], history.history["sharpness_limit"]
        ([9.0, 9.0], [20.0, 20.0])
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        every_n_steps: int = 100,
        preconditioned: bool | None = None,
        loss: Any = None,
        sample_weight: Any = None,
        iterations: int = 20,
        tolerance: float = 1e-3,
        seed: int = 0,
        jit_compile: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(
                f"`every_n_steps` of SharpnessMonitor must be an integer ≥ 1. Received: every_n_steps={every_n_steps!r}."
            )
        self.x = tf.nest.map_structure(tf.convert_to_tensor, x)
        self.y = tf.nest.map_structure(tf.convert_to_tensor, y)
        self.sample_weight = None if sample_weight is None else tf.convert_to_tensor(sample_weight)
        self.every_n_steps = every_n_steps
        self.preconditioned = preconditioned
        self.loss = loss
        self.iterations = iterations
        self.tolerance = tolerance
        self.seed = seed
        self.jit_compile = jit_compile
        self.records: list[dict[str, float | int]] = []
        self._measure = None
        self._previous_step = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        optimizer = self.model.optimizer
        preconditioned = is_adam(optimizer) if self.preconditioned is None else self.preconditioned

        def measure():
            preconditioner = None
            if preconditioned:
                preconditioner = adam_preconditioner(optimizer, self.model.trainable_variables)
            sharpness = top_hessian_eigenvalue(
                self.model,
                self.x,
                self.y,
                loss=self.loss,
                sample_weight=self.sample_weight,
                preconditioner=preconditioner,
                iterations=self.iterations,
                tolerance=self.tolerance,
                seed=self.seed,
            )
            return tf.cast(sharpness, tf.float32), stability_limit(optimizer)

        self._measure = tf.function(measure, jit_compile=self.jit_compile)
        self._previous_step = int(optimizer.iterations.numpy())

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        previous, self._previous_step = self._previous_step, step
        # With steps_per_execution > 1 a batch end covers several steps: measure once a multiple is passed.
        if step // self.every_n_steps == previous // self.every_n_steps:
            return
        sharpness, limit = (float(value) for value in self._measure())
        self.records.append({"step": step, "sharpness": sharpness, "sharpness_limit": limit})
        if logs is not None:
            logs.update(sharpness=sharpness, sharpness_limit=limit)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.records and logs is not None:
            logs.update({name: self.records[-1][name] for name in SHARPNESS_LOGS})
