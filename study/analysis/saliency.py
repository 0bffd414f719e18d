"""Where each cell's selected model looks: Grad-CAM on a seeded handful of images per class of the
internal split and of each external set (cxrnets.saliency computes the maps; figures.py draws them)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cxrnets.predict import model_from_checkpoint
from study.analysis.evaluation import StudyData
from study.analysis.report_tables import slug
from study.analysis.selection import Analysis


@dataclass
class SaliencyRow:
    """One set's images in a panel, with their maps."""

    name: str
    images: np.ndarray        # (k, 3, S, S) uint8, as the model saw them (before normalisation)
    maps: np.ndarray          # (k, S, S) in [0, 1]
    true: list[str]
    predicted: list[str]
    probability: np.ndarray   # (k,) the predicted class's probability


@dataclass
class SaliencyPanel:
    """The Grad-CAM figure of one (dataset, model) cell."""

    dataset: str
    model: str
    trial_id: str
    layer: str
    grid: str                 # the layer's spatial grid, e.g. "4x4"
    image_size: int
    per_class: int
    rows: list[SaliencyRow] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return f"{slug(self.dataset)}_{slug(self.model)}"


def pick_images(y_true: np.ndarray, rows: np.ndarray, classes: int, per_class: int, seed: int) -> np.ndarray:
    """Up to `per_class` of `rows` per class, drawn with `seed`, class by class (the same on every run)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for k in range(classes):
        members = rows[y_true == k]
        if len(members):
            chosen += sorted(rng.choice(members, size=min(per_class, len(members)), replace=False).tolist())
    return np.array(chosen, dtype=np.int64)


def saliency_panels(analysis: Analysis, data: StudyData, per_class: int, device: str = "auto") -> list[SaliencyPanel]:
    """A panel per cell's best model (single-label studies): its internal split, then each external set."""
    import torch

    from cxrnets.batches import Batches
    from cxrnets.saliency import grad_cam

    seed = analysis.study.settings.seed
    panels = []
    for chosen in analysis.selected:
        if chosen.rank != 1:
            continue
        if chosen.evaluation.multilabel:
            note = (f"{chosen.dataset}: no Grad-CAM figures (they show the predicted class of a single-label study; "
                    f"{chosen.dataset} is multi-label)")
            if per_class and note not in analysis.notes:
                analysis.notes.append(note)
            continue
        checkpoint = chosen.evaluation.checkpoint  # the weights scored on the split, not the file read again
        config = data.train_config(checkpoint)
        prepared = data.prepare(config)
        model, target = model_from_checkpoint(checkpoint, device)
        classes = list(checkpoint["classes"])
        split_rows = prepared.rows(analysis.split)
        sets = [(f"internal {analysis.split}", prepared.images, split_rows, prepared.targets[split_rows])]
        sets += [(s.name, s.images, s.rows, s.y_true) for s in analysis.external_sets
                 if (s.dataset, s.image_size) == (chosen.dataset, config.image_size)]
        panel = None
        for number, (name, images, rows, y_true) in enumerate(sets):
            picked = pick_images(y_true, np.arange(len(rows)), len(classes), per_class, seed + number)
            image_rows = rows[picked]
            inputs, _ = next(iter(Batches(images, np.zeros(len(images), dtype=np.int64), image_rows, len(image_rows),
                                          target, train=False)))
            with torch.no_grad():
                probabilities = torch.softmax(model(inputs).float(), dim=1).cpu().numpy()
            predicted = probabilities.argmax(axis=1)
            maps = grad_cam(model, config.model, inputs, predicted.tolist())
            if panel is None:
                panel = SaliencyPanel(chosen.dataset, chosen.model, chosen.candidate.trial_id, maps.layer,
                                      f"{maps.grid[0]}x{maps.grid[1]}", config.image_size, per_class)
            panel.rows.append(SaliencyRow(name, np.asarray(images[image_rows]), maps.maps,
                                          [classes[k] for k in y_true[picked]], [classes[k] for k in predicted],
                                          probabilities[np.arange(len(predicted)), predicted]))
        panels.append(panel)
    return panels
