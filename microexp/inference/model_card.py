"""A model card for an exported (or any) microexp checkpoint: what it was trained on, how it was measured, how
well, where it fails, and what it must not be used for.

:func:`model_card` writes Markdown from the checkpoint alone plus, when the checkpoint sits in a
``microexp train`` run directory (``RUN/fold_XX/model.pt`` or ``RUN/final/model.pt``), that run's
``metrics.json`` and ``config.yaml``: the honest cross-validation estimate (pooled and fold mean ± std,
per-class recall, AU F1), never a number the card computes itself. Reads files only (no engine import).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

__all__ = ["OUT_OF_SCOPE", "model_card", "run_directory_of"]

#: uses a card always names as out of scope (see README, "Responsible use")
OUT_OF_SCOPE = (
    "lie or deception detection: a micro-expression is not a sign of lying, and the research does not support it",
    "decisions about individuals: hiring, grading, screening, interrogation, credit, insurance or access",
    "emotion recognition in the workplace or in education, which the EU AI Act prohibits (Article 5(1)(f)) "
    "except for medical or safety reasons",
    "clinical diagnosis of any condition",
    "faces of people who have not given informed consent to this analysis",
)
#: a class whose pooled recall is below this is named as a failure mode
LOW_RECALL = 0.5


def run_directory_of(checkpoint: str | Path) -> Path | None:
    """The ``microexp train`` run directory holding ``checkpoint`` (``RUN/fold_XX/`` or ``RUN/final/``), or None."""
    folder = Path(checkpoint).resolve().parent
    run = folder.parent
    if (folder.name.startswith("fold_") or folder.name == "final") and (run / "folds.json").is_file():
        return run
    return None


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _read_yaml(path: Path) -> dict[str, Any] | None:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return None
    return loaded if isinstance(loaded, dict) else None


def model_card(checkpoint: str | Path, payload: Mapping[str, Any], *, export: str | None = None) -> str:
    """The Markdown model card of ``checkpoint`` (its loaded ``payload``).

    Args:
        checkpoint: the checkpoint's path (its run directory, when it has one, gives the metrics).
        payload: the loaded checkpoint (:func:`microexp.checkpoint.load_checkpoint`).
        export: the exported file the card describes, if any.
    """
    kwargs = dict(payload.get("model_kwargs") or {})
    data = dict(payload.get("data") or {})
    pipeline = data.get("pipeline") if isinstance(data.get("pipeline"), dict) else {}
    sampling = pipeline.get("sampling") if isinstance(pipeline.get("sampling"), dict) else {}
    extra = dict(payload.get("extra") or {})
    classes = list(payload.get("class_names") or [])
    aus = list(kwargs.get("aus") or [])
    au_only = kwargs.get("num_classes") == 0
    run = run_directory_of(checkpoint)
    metrics = _read_json(run / "metrics.json") if run is not None else None
    config = _read_yaml(run / "config.yaml") if run is not None else None
    fold = payload.get("fold")
    params = sum(int(t.numel()) for t in (payload.get("state_dict") or {}).values() if hasattr(t, "numel"))

    lines = [f"# Model card: {payload.get('model_name')}", ""]
    if export:
        lines += [f"Exported file: `{export}`, from checkpoint `{checkpoint}`.", ""]
    else:
        lines += [f"Checkpoint: `{checkpoint}`.", ""]
    lines += ["## Model", "",
              f"- `{payload.get('model_name')}`, {params:,} weights; microexp {payload.get('microexp_version', '?')}.",
              f"- Task: {'action-unit detection alone' if au_only else 'micro-expression emotion classification'}"
              + (f" with {len(aus)} action units ({', '.join('AU' + a for a in aus)})" if aus and not au_only else "")
              + (f" ({', '.join('AU' + a for a in aus)})" if au_only else "") + ".",
              f"- Classes: {', '.join(classes) if classes and not au_only else 'none (AUs only)'}.",
              f"- Input: {kwargs.get('num_frames', '?')} frames at {kwargs.get('input_size', '?')} px"
              + (f" ({pipeline.get('modality')})" if pipeline.get("modality") else "")
              + f", sampling `{sampling.get('strategy', '?')}`, class map `{data.get('class_map', '?')}`; the "
              "predictor rebuilds this preprocessing from the file.", ""]

    lines += ["## Training data and protocol", ""]
    if config is not None:
        cv = config.get("cv") or {}
        annotations = (config.get("data") or {}).get("annotations")
        entries = annotations if isinstance(annotations, list) else [{"path": annotations}]
        for entry in entries:  # a composite table lists one file per dataset
            path = entry.get("path") if isinstance(entry, dict) else entry
            name = f" (dataset {entry['dataset']})" if isinstance(entry, dict) and entry.get("dataset") else ""
            synthetic = " (the synthetic benchmark: results on it do not transfer to real faces)"
            lines.append(f"- Clip table: `{path}`{name}" + (synthetic if _synthetic(path) else "") + ".")
        protocol = cv.get("protocol")
        detail = {"kfold": f", {cv.get('folds')} folds",
                  "cross": f", trained on {cv.get('train_datasets')} and tested on {cv.get('test_datasets')}"}
        lines.append(f"- Protocol: `{protocol}`" + detail.get(protocol, "") + ", subjects never shared between "
                     "training and test; model selection on training subjects only.")
    else:
        lines.append("- No run directory next to the checkpoint: the training data and protocol are not recorded "
                     "here.")
    trained_on = extra.get("subjects") or extra.get("train_subjects")
    if fold is None and run is not None:
        lines.append("- This is the final model, trained on every subject of the table; its performance is "
                     "estimated by the run's cross-validation below, not measured on it.")
    elif fold is not None:
        lines.append(f"- This is fold {fold}'s model ({len(trained_on or [])} training subjects); the figures below "
                     "are the whole run's cross-validation estimate.")
    lines.append("")

    lines += ["## Measured performance", ""]
    if metrics is None:
        lines += ["No `metrics.json` was found with this checkpoint: there is no measured performance to report. "
                  "Do not use the model until it has been evaluated under a subject-independent protocol.", ""]
    else:
        if "pooled" in metrics:
            p, m, s = metrics["pooled"], metrics["fold_mean"], metrics["fold_std"]
            pooled_row = " | ".join(_number(p[k]) for k in ("acc", "uf1", "uar"))
            mean_row = " | ".join(f"{_number(m[k])} ± {_number(s[k])}" for k in ("acc", "uf1", "uar"))
            lines += [f"Cross-validation over {metrics.get('num_folds')} folds, {metrics.get('num_samples')} test "
                      "clips (each tested once, by a model that never saw its subject):", "",
                      "| | ACC | UF1 | UAR |", "| --- | ---: | ---: | ---: |",
                      f"| pooled (all folds' predictions, then one metric) | {pooled_row} |",
                      f"| fold mean ± std (ddof 0) | {mean_row} |", "",
                      "Per-class recall (pooled): " + ", ".join(
                          f"{name} {_number(v.get('recall'))}" for name, v in metrics.get("per_class", {}).items())
                      + ".", ""]
        if "aus" in metrics:
            a = metrics["aus"]
            lines += [f"Action units (detected at p >= {a['threshold']:g}): mean AU F1 pooled "
                      f"{_number(a['pooled']['mean_f1'])}, fold mean {_number(a['fold_mean']['mean_f1'])} ± "
                      f"{_number(a['fold_std']['mean_f1'])}.", ""]

    lines += ["## Known failure modes", ""]
    weak = [name for name, v in (metrics or {}).get("per_class", {}).items()
            if v.get("recall") is not None and v["recall"] < LOW_RECALL]
    if weak:
        lines.append(f"- Classes recognised less than half the time in the cross-validation: {', '.join(weak)}.")
    if metrics is not None and "fold_std" in metrics and (metrics["fold_std"].get("uf1") or 0) > 0.05:
        lines.append(f"- Results vary across subjects (fold std of UF1 {_number(metrics['fold_std']['uf1'])}): a "
                     "new person may be recognised much worse than the mean.")
    lines += ["- Onset, apex and offset not given are spotted from the face's motion; blinks, head motion, "
              "talking and lighting changes mislead the spotter and the model.",
              "- Faces unlike the training subjects (age, skin tone, camera, frame rate, pose, occlusion) were not "
              "measured; the training table's demographics are not recorded here.",
              "- The model always answers with one of its classes, also for a clip with no micro-expression.", ""]
    lines += ["## Intended use", "",
              "Research on micro-expression recognition with consented, licensed data: comparing methods under a "
              "subject-independent protocol, and studying groups of clips, with the spread of the results reported.",
              "", "## Out of scope", ""]
    lines += [f"- {use}" for use in OUT_OF_SCOPE]
    lines += ["", "See the README's \"Responsible use\" section for licences, consent and privacy."]
    return "\n".join(lines) + "\n"


def _synthetic(annotations: Any) -> bool:
    if not annotations:
        return False
    folder = Path(str(annotations)).parent
    return (folder / "synth.json").is_file()
