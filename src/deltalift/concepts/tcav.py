"""Testing with Concept Activation Vectors (TCAV; Kim et al., ICML 2018), with Captum's interface.

For a layer ``l`` with activations ``f_l(x)``, a concept ``C`` and a class ``k`` (the target):

* the CAV ``v_C^l`` is the normal of a linear classifier separating ``f_l`` of the concept's
  examples from ``f_l`` of the other concepts' examples in the experimental set (section 3.2;
  :mod:`deltalift.concepts.classifiers`);
* the conceptual sensitivity of an input is the directional derivative of the target's logit
  ``h_{l,k}`` along the CAV (section 3.3)::

      S_{C,k,l}(x) = grad h_{l,k}(f_l(x)) . v_C^l

* the TCAV score is the fraction of inputs of class ``k`` with a positive sensitivity
  (section 3.4), ``TCAV_{Q,C,k,l} = |{x in X_k : S_{C,k,l}(x) > 0}| / |X_k|`` (``"sign_count"``),
  and Captum's ``"magnitude"`` is the mean sensitivity ``mean_x S_{C,k,l}(x)``.

Activations and gradients are read in the model's captured ATen graph
(:func:`deltalift.methods.layer_attribution.layer_activation` and ``layer_gradient``), so a
layer may be a module, a module path (``"features.3"``) or a graph node name (``"relu_1"``):
one call of a module used twice, or a functional ``F.relu``, is a layer too, which module hooks
cannot address.  The significance test over random concepts is
:func:`deltalift.concepts.significance.tcav_significance`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from deltalift.capture import as_module
from deltalift.concepts.cache import CAVCache, model_digest
from deltalift.concepts.classifiers import CAVClassifier, CAVFit, ClassifierSpec, make_classifier
from deltalift.concepts.concept import Concept, concepts_key
from deltalift.genomics.attribute import _model_device
from deltalift.inputs import TargetType, as_tuple, check_inputs
from deltalift.layers import LayerType
from deltalift.methods.layer_attribution import layer_activation, layer_gradient
from deltalift.runtime import progress

Tensor = torch.Tensor
Scores = dict[str, dict[str, dict[str, Tensor]]]

__all__ = ["CAV", "TCAV", "layer_name"]


@dataclass
class CAV:
    """The CAVs of one experimental set at one layer: ``weights[i]`` is the vector of the concept
    with id ``classes[i]``; ``stats`` holds the classifier's held-out accuracy (``"accs"``)."""

    concepts: list[Concept]
    layer: str
    weights: Tensor
    classes: list[int]
    stats: dict[str, float]

    def vector(self, concept: Concept) -> Tensor:
        """The CAV of ``concept`` (a row of :attr:`weights`)."""
        if concept.id not in self.classes:
            raise ValueError(f"concept {concept!r} is not one of this CAV's concepts {self.classes}")
        return self.weights[self.classes.index(concept.id)]


def _device(module: nn.Module) -> torch.device:
    """Where the module's parameters or buffers are (the CPU for a module without any); the
    helper of :mod:`deltalift.genomics.attribute`."""
    return _model_device(module) or torch.device("cpu")


def layer_name(model: nn.Module, layer: LayerType) -> str:
    """The name of a layer in TCAV's results: a module's path, or the string given."""
    if isinstance(layer, str):
        return layer
    if not isinstance(layer, nn.Module):
        raise TypeError(f"a layer is a module, a module path or a graph node name, got {type(layer).__name__}")
    for name, module in model.named_modules(remove_duplicate=False):
        if module is layer:
            return name
    raise ValueError(f"the layer {type(layer).__name__} is not a submodule of the model")


class TCAV:
    """TCAV scores of concepts at layers of a model (Captum's ``TCAV``).

    Parameters
    ----------
    model:
        An ``nn.Module`` or a forward function that ``torch.export`` can capture.
    layers:
        One layer or a list: modules, module paths or graph node names (see
        :func:`deltalift.layers.find_layer`).  A module that runs twice must be given by the
        graph node of one call.
    model_id:
        A name of the model, part of the CAV cache's key (as Captum's); a digest of the
        parameters is part of it too, so retraining the model never reuses old CAVs.
    classifier:
        ``"sgd"`` (default, Captum's linear classifier), ``"svm"``, ``"fastcav"``, or an object
        with ``fit(activations, labels, seed) -> CAVFit`` and ``settings()``
        (:mod:`deltalift.concepts.classifiers`).
    attribute_to_layer_input:
        Read the activation entering each layer instead of the one leaving it.
    save_path:
        A folder to cache CAVs in (``None``: no disk cache; CAVs are still kept in memory).
    seed:
        Seed of the classifiers' train/test split and of their training.
    batch_size:
        Concept examples per forward pass when their activations are computed.
    show_progress:
        Show tqdm progress bars (activations, CAVs, layers).
    classifier_kwargs:
        Options of a classifier given by name (``alpha``, ``C``, ``test_split_ratio``, ...).
    """

    def __init__(
        self,
        model: nn.Module | Any,
        layers: Union[LayerType, list[LayerType]],
        model_id: str = "default_model_id",
        classifier: ClassifierSpec = "sgd",
        attribute_to_layer_input: bool = False,
        save_path: str | Path | None = None,
        seed: int = 0,
        batch_size: int = 256,
        show_progress: bool = False,
        **classifier_kwargs: Any,
    ) -> None:
        if not model_id:
            raise ValueError("model_id must be a non-empty string")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self._module = as_module(model)
        given = layers if isinstance(layers, list) else [layers]
        if not given:
            raise ValueError("layers is empty; give at least one layer")
        self.layers: list[LayerType] = list(given)
        self.layer_names = [layer_name(self._module, layer) for layer in self.layers]
        if len(set(self.layer_names)) != len(self.layer_names):
            raise ValueError(f"a layer is given twice: {self.layer_names}")
        self.model_id = model_id
        self.classifier: CAVClassifier = make_classifier(classifier, **classifier_kwargs)
        self.attribute_to_layer_input = attribute_to_layer_input
        self.cache = CAVCache(save_path) if save_path is not None else None
        self.seed = seed
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.cavs: dict[str, dict[str, CAV]] = {}
        self._activations: dict[tuple[str, str], Tensor] = {}
        self._concepts: dict[int, Concept] = {}

    # ----------------------------------------------------------------------------------------
    # activations and CAVs

    def _layer(self, name: str) -> LayerType:
        return self.layers[self.layer_names.index(name)]

    def concept_activations(self, concept: Concept, layer: str) -> Tensor:
        """``f_l(x)`` of the concept's examples at the layer named ``layer``, flattened to
        ``(N, F)`` (computed once per concept contents and layer, on the model's device, kept
        on the CPU where the classifiers train)."""
        key = (concept.fingerprint(), layer)
        if key not in self._activations:
            examples = concept.examples().to(_device(self._module))
            chunks = [
                layer_activation(
                    self._module,
                    (examples[i : i + self.batch_size],),
                    (),
                    self._layer(layer),
                    self.attribute_to_layer_input,
                )
                for i in range(0, examples.shape[0], self.batch_size)
            ]
            self._activations[key] = torch.cat([c.reshape(c.shape[0], -1) for c in chunks]).detach().cpu()
        return self._activations[key]

    def _settings(self, concepts: list[Concept], layer: str) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "model": model_digest(self._module),
            "layer": layer,
            "layer_input": self.attribute_to_layer_input,
            "concepts_key": concepts_key(concepts),
            "concepts": [c.fingerprint() for c in concepts],
            "classifier": self.classifier.settings(),
            "seed": self.seed,
        }

    def _register(self, experimental_sets: list[list[Concept]]) -> None:
        if not isinstance(experimental_sets, list) or not experimental_sets:
            raise ValueError("experimental_sets must be a non-empty list of lists of concepts")
        for concepts in experimental_sets:
            if not isinstance(concepts, list) or len(concepts) < 2:
                raise ValueError(f"an experimental set is a list of at least two concepts, got {concepts!r}")
            ids = [c.id for c in concepts]
            if len(set(ids)) != len(ids):
                raise ValueError(f"an experimental set names the same concept id twice: {ids}")
            for concept in concepts:
                if not isinstance(concept, Concept):
                    raise TypeError(f"experimental sets hold Concept objects, got {type(concept).__name__}")
                known = self._concepts.setdefault(concept.id, concept)
                if known is not concept and known.fingerprint() != concept.fingerprint():
                    raise ValueError(
                        f"two different concepts have the id {concept.id} ({known.name!r} and {concept.name!r}); "
                        "reuse one Concept object per id"
                    )

    def compute_cavs(
        self, experimental_sets: list[list[Concept]], force_train: bool = False
    ) -> dict[str, dict[str, CAV]]:
        """Train (or load from the cache) the CAVs of every experimental set at every layer.

        Returns the CAVs by experimental-set key (the concept ids joined by ``-``) and layer
        name; ``force_train`` retrains even when a cached CAV exists (and overwrites it).
        """
        self._register(experimental_sets)
        jobs = [(concepts, layer) for concepts in experimental_sets for layer in self.layer_names]
        for concepts, layer in progress(jobs, self.show_progress, desc="CAVs", unit="CAV", leave=False):
            key = concepts_key(concepts)
            if not force_train and layer in self.cavs.get(key, {}):
                continue
            settings = self._settings(concepts, layer)
            fit = None if force_train or self.cache is None else self.cache.load(settings)
            if fit is None:
                fit = self._train(concepts, layer)
                if self.cache is not None:
                    self.cache.save(settings, fit)
            self.cavs.setdefault(key, {})[layer] = CAV(list(concepts), layer, fit.weights, fit.classes, fit.stats)
        return self.cavs

    def _train(self, concepts: list[Concept], layer: str) -> CAVFit:
        activations = [self.concept_activations(c, layer) for c in concepts]
        x = torch.cat(activations)
        y = torch.cat([torch.full((a.shape[0],), c.id, dtype=torch.long) for a, c in zip(activations, concepts)])
        fit = self.classifier.fit(x, y, self.seed)
        if sorted(fit.classes) != sorted(c.id for c in concepts):
            raise ValueError(f"the classifier returned CAVs for {fit.classes}, not for {[c.id for c in concepts]}")
        if fit.weights.shape != (len(fit.classes), x.shape[1]):
            raise ValueError(
                f"the classifier returned weights of shape {tuple(fit.weights.shape)}, expected "
                f"({len(fit.classes)}, {x.shape[1]})"
            )
        return fit

    # ----------------------------------------------------------------------------------------
    # sensitivities and scores

    def layer_gradients(
        self, inputs: Any, layer: str, target: TargetType = None, additional_forward_args: Any = None
    ) -> Tensor:
        """``grad h_{l,k}(f_l(x))``: the target's gradient at the layer, flattened to ``(N, F)``."""
        tensors, _ = check_inputs(inputs, allow_integer=True)  # row-major strides (deltalift.inputs.row_major)
        device = _device(self._module)
        tensors = tuple(t.to(device) for t in tensors)
        extra = as_tuple(additional_forward_args)
        _, gradient = layer_gradient(
            self._module, tensors, extra, self._layer(layer), self.attribute_to_layer_input, target
        )
        return gradient.reshape(gradient.shape[0], -1)

    def sensitivities(
        self,
        inputs: Any,
        experimental_sets: list[list[Concept]],
        target: TargetType = None,
        additional_forward_args: Any = None,
    ) -> dict[str, dict[str, Tensor]]:
        """The conceptual sensitivities ``S_{C,k,l}(x) = grad h_{l,k}(f_l(x)) . v_C^l``: per
        experimental-set key and layer, a tensor ``(n_inputs, n_concepts)`` with the columns in
        the order of the set's concepts."""
        self.compute_cavs(experimental_sets)
        result: dict[str, dict[str, Tensor]] = {}
        for layer in progress(self.layer_names, self.show_progress, desc="layers", unit="layer", leave=False):
            gradients = self.layer_gradients(inputs, layer, target, additional_forward_args)
            for concepts in experimental_sets:
                cav = self.cavs[concepts_key(concepts)][layer]
                vectors = torch.stack([cav.vector(c) for c in concepts]).to(gradients.device, gradients.dtype)
                result.setdefault(concepts_key(concepts), {})[layer] = gradients.float() @ vectors.float().T
        return result

    def interpret(
        self,
        inputs: Any,
        experimental_sets: list[list[Concept]],
        target: TargetType = None,
        additional_forward_args: Any = None,
    ) -> Scores:
        """TCAV scores of every experimental set at every layer, as Captum's ``interpret``.

        Parameters
        ----------
        inputs:
            The inputs ``X_k`` to test (usually examples of the target class), a tensor
            ``(batch, ...)`` or a tuple of them.
        experimental_sets:
            Lists of concepts; a CAV is trained per list and layer (e.g. ``[[stripes, random_0],
            [stripes, random_1]]``).
        target, additional_forward_args:
            As Captum's (the class ``k``; further model arguments).

        Returns
        -------
        ``scores[set_key][layer] = {"sign_count": (n_concepts,), "magnitude": (n_concepts,)}``,
        ``set_key`` the set's concept ids joined by ``-``: the fraction of inputs with a
        positive directional derivative along each concept's CAV, and the mean derivative.
        """
        scores: Scores = {}
        for key, per_layer in self.sensitivities(inputs, experimental_sets, target, additional_forward_args).items():
            for layer, s in per_layer.items():
                scores.setdefault(key, {})[layer] = {
                    "sign_count": (s > 0).float().mean(0),
                    "magnitude": s.mean(0),
                }
        return scores
