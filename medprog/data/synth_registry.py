"""A seeded synthetic acute-coronary patient registry in the registry CSV format of
`medprog.data.patient_registry` (``registry.csv`` with its ``registry.schema.json`` sidecar), for
offline demos and tests of the C-Reason program.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from .patient_registry import REGISTRY_FILE


def _synth_columns(rng: np.random.Generator, n: int, seed: int) -> dict[str, Any]:
    """The synthetic registry's columns (see `synth_registry`), drawn from ``rng`` in a fixed order."""
    age = np.clip(rng.normal(66, 12, n), 30, 95).round()
    female = rng.random(n) < 0.3
    diabetes = rng.random(n) < 0.2 + 0.004 * (age - 50)
    bmi = np.clip(rng.normal(27.5, 4.5, n) + 2 * diabetes, 17, 48).round(1)
    smoking = np.where(rng.random(n) < 0.35, "current", np.where(rng.random(n) < 0.5, "former", "never"))
    sbp = np.clip(rng.normal(135, 22, n), 70, 220).round()
    hr = np.clip(rng.normal(80, 16, n), 40, 160).round()
    killip = np.minimum(4, 1 + rng.poisson(np.clip(0.15 + (age - 60) / 80, 0.05, 1.2), n))
    creat = np.clip(rng.lognormal(np.log(1.0 + 0.01 * (age - 60) + 0.3 * diabetes), 0.3, n) * (1 - 0.15 * female),
                    0.4, 8).round(2)
    egfr = (142 * np.minimum(creat / np.where(female, 0.7, 0.9), 1) ** np.where(female, -0.241, -0.302)
            * np.maximum(creat / np.where(female, 0.7, 0.9), 1) ** -1.2 * 0.9938 ** age * np.where(female, 1.012, 1))
    egfr = np.clip(egfr * rng.normal(1, 0.03, n), 3, 140).round()
    ef = np.clip(rng.normal(55 - 6 * (killip - 1), 8, n), 15, 75).round()
    stemi = rng.random(n) < 0.4
    pci = rng.random(n) < np.where(stemi, 0.9, 0.6)
    troponin = np.clip(rng.lognormal(np.where(stemi, 1.5, 0.3), 1.0, n), 0.01, 200).round(2)
    ldl = np.clip(rng.normal(3.0, 0.9, n), 0.8, 7).round(1)
    logit = -2.4 + 0.05 * (age - 65) + 0.9 * (killip - 1) - 0.05 * (ef - 50) - 0.02 * (egfr - 60) - 0.8 * pci
    death = rng.random(n) < 1 / (1 + np.exp(-logit))
    yn = lambda b: np.where(b, "yes", "no")  # noqa: E731
    columns = {
        "patient_id": [f"P{seed}-{i:05d}" for i in range(n)], "age": age.astype(int),
        "sex": np.where(female, "female", "male"),
        "bmi": bmi, "smoking": smoking, "diabetes": yn(diabetes), "systolic_bp": sbp.astype(int),
        "heart_rate": hr.astype(int), "killip_class": [["I", "II", "III", "IV"][k - 1] for k in killip],
        "stemi": yn(stemi), "troponin": troponin, "creatinine": creat, "egfr": egfr.astype(int), "ldl": ldl,
        "ejection_fraction": ef.astype(int), "pci": yn(pci), "in_hospital_death": yn(death),
    }
    return columns


SYNTH_VARIABLES: dict[str, tuple[str, str, str, str]] = {
    "age": ("age", "Demographics", "numeric", "years"), "sex": ("sex", "Demographics", "categorical", ""),
    "bmi": ("body-mass index", "Demographics", "numeric", "kg/m2"),
    "smoking": ("smoking status", "History", "categorical", ""),
    "diabetes": ("diabetes", "History", "categorical", ""),
    "systolic_bp": ("systolic blood pressure", "Presentation", "numeric", "mmHg"),
    "heart_rate": ("heart rate", "Presentation", "numeric", "bpm"),
    "killip_class": ("Killip class", "Presentation", "categorical", ""),
    "stemi": ("ST-elevation MI", "Presentation", "categorical", ""),
    "troponin": ("peak troponin", "Laboratory", "numeric", "ng/mL"),
    "creatinine": ("serum creatinine", "Laboratory", "numeric", "mg/dL"),
    "egfr": ("eGFR", "Laboratory", "numeric", "mL/min/1.73m2"),
    "ldl": ("LDL cholesterol", "Laboratory", "numeric", "mmol/L"),
    "ejection_fraction": ("left ventricular ejection fraction", "Imaging", "numeric", "%"),
    "pci": ("percutaneous coronary intervention", "Treatment", "categorical", ""),
    "in_hospital_death": ("in-hospital death", "Outcome", "categorical", ""),
}
"""Label, section, type and unit of each column of the synthetic registry."""


def synth_registry(out: str | Path, n: int = 500, seed: int = 0, *, overwrite: bool = False) -> dict:
    """Write a seeded synthetic acute-coronary registry (``registry.csv`` and ``registry.schema.json``)
    to ``out`` (a directory, or a .csv path). Variables are correlated: eGFR is computed from
    creatinine, age and sex; in-hospital death depends on age, Killip class, ejection fraction,
    eGFR and PCI. Same ``(n, seed)``, same bytes."""
    rng = np.random.default_rng(seed)
    out = Path(out)
    path = out if out.suffix == ".csv" else out / REGISTRY_FILE
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = _synth_columns(rng, n, seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for i in range(n):
            w.writerow([columns[c][i] for c in columns])
    schema = {"id": "patient_id", "outcome": "in_hospital_death",
              "outcome_question": "Did the patient die in hospital?",
              "variables": {k: {"label": a, "section": b, "type": c, "unit": d}
                            for k, (a, b, c, d) in SYNTH_VARIABLES.items()}}
    path.with_suffix(".schema.json").write_text(json.dumps(schema, indent=1) + "\n")
    return {"dataset": "registry", "out": str(out), "csv": str(path), "schema": str(path.with_suffix(".schema.json")),
            "n": n, "seed": seed, "deaths": sum(v == "yes" for v in columns["in_hospital_death"])}
