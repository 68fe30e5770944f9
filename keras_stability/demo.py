"""A short, deterministic training run on the embedded data: the library end to end in one command."""

import keras
import numpy as np

from keras_stability.config.sections import MlpConfig
from keras_stability.datasets import mnist_small
from keras_stability.experiments.zoo import build_model
from keras_stability.model import stabilize
from keras_stability.transforms import FACTORIES


def run_demo(epochs=3, transform="clip_by_global_norm", threshold=1.0, learning_rate=0.1, seed=0, print_fn=print):
    """Trains the zoo's doc-002 MLP on 8,000 embedded MNIST digits and tests on the other 2,000.

    Returns the Keras history dict plus `test_accuracy`.
    """
    keras.utils.set_random_seed(seed)
    images, labels = mnist_small()
    order = np.random.default_rng(seed).permutation(len(labels))
    train, test = order[:8000], order[8000:]
    model = stabilize(build_model(MlpConfig()), FACTORIES[transform](threshold) if transform else None)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=10,
    )

    class EpochLine(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            print_fn(
                f"epoch {epoch + 1}/{epochs}  loss {logs['loss']:.4f}  accuracy {logs['accuracy']:.4f}  "
                f"grad_norm {logs['grad_norm']:.3f}  clipped_norm {logs['clipped_norm']:.3f}  "
                f"clip_rate {logs['clip_rate']:.2f}  nonfinite_steps {int(logs['nonfinite_steps'])}"
            )

    history = model.fit(images[train], labels[train], batch_size=100, epochs=epochs, verbose=0, callbacks=[EpochLine()])
    accuracy = model.evaluate(images[test], labels[test], batch_size=500, verbose=0, return_dict=True)["accuracy"]
    print_fn(f"test accuracy on 2,000 held-out digits: {accuracy:.4f}")
    result = dict(history.history)
    result["test_accuracy"] = accuracy
    return result
