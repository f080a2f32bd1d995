"""AI Hospital patient cases (``patients.json``), and a seeded generator of synthetic English cases.

The original layout is a JSON list of cases with ``id``, ``department``, ``diseases``,
``profile`` (one string of lines ``<病情陈述> …`` complaint in lay words, ``<性别> …`` sex,
``<年龄> …`` age, ``<工作与生活> …`` work and life, ``<说法方式> …`` speaking style) and
``medical_record`` with the sections 一般资料 (general), 主诉 (chief complaint), 现病史
(present illness), 既往史 (past history), 查体 (physical examination), 辅助检查 (tests),
初步诊断 (preliminary diagnosis), 诊断依据 (diagnostic basis), 鉴别诊断 (differential),
诊治经过 (treatment course), 诊断结果 (final diagnosis), 分析总结 (summary).

English keys (the `MedicalRecord` / `Profile` field names, profile lines ``<complaint> …``)
are accepted too; the loader maps both. Section values that are objects or lists are
flattened to ``key: value`` lines.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

PROFILE_KEYS = {"病情陈述": "complaint", "性别": "sex", "年龄": "age", "工作与生活": "work_life", "说法方式": "speaking_style"}
RECORD_KEYS = {
    "一般资料": "general", "主诉": "chief_complaint", "现病史": "present_illness", "既往史": "past_history",
    "查体": "physical_exam", "辅助检查": "tests", "初步诊断": "preliminary_diagnosis", "诊断依据": "basis",
    "鉴别诊断": "differential", "诊治经过": "treatment_course", "诊断结果": "final_diagnosis", "分析总结": "summary",
}


class HospitalFormatError(ValueError):
    """A case that breaks the patients.json layout; the message names the file and case."""


class Profile(BaseModel):
    complaint: str = ""
    sex: str = ""
    age: str = ""
    work_life: str = ""
    speaking_style: str = ""


class MedicalRecord(BaseModel):
    general: str = ""
    chief_complaint: str = ""
    present_illness: str = ""
    past_history: str = ""
    physical_exam: str = ""
    tests: str = ""
    preliminary_diagnosis: str = ""
    basis: str = ""
    differential: str = ""
    treatment_course: str = ""
    final_diagnosis: str = ""
    summary: str = ""


class PatientCase(BaseModel):
    id: str
    department: str = ""
    diseases: list[str] = []
    profile: Profile
    record: MedicalRecord

    @property
    def reference_diagnosis(self) -> str:
        """诊断结果 (final diagnosis), else 初步诊断 (preliminary diagnosis)."""
        return self.record.final_diagnosis.strip() or self.record.preliminary_diagnosis.strip()

    def persona(self) -> str:
        """What the patient agent is: complaint in lay words, sex, age, life, speaking style."""
        p = self.profile
        return (f"Complaint in your own words: {p.complaint}\nSex: {p.sex}\nAge: {p.age}\n"
                f"Work and life: {p.work_life}\nSpeaking style: {p.speaking_style}")

    def history(self) -> str:
        """What the patient knows of their record: general data, complaint, present and past history."""
        r = self.record
        return (f"General: {r.general}\nChief complaint: {r.chief_complaint}\n"
                f"Present illness: {r.present_illness}\nPast history: {r.past_history}")

    def examinations(self) -> str:
        """What the examiner sees: physical examination and tests."""
        return f"Physical examination:\n{self.record.physical_exam}\n\nTests:\n{self.record.tests}"


def _flatten(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return "\n".join(f"{k}: {_flatten(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "\n".join(_flatten(v) for v in value)
    return str(value).strip()


_PROFILE_LINE = re.compile(r"<([^<>]+)>\s*(.*)")


def parse_profile(value: object) -> Profile:
    """A profile string of ``<tag> text`` lines (Chinese or English tags) or an object."""
    fields: dict[str, str] = {}
    if isinstance(value, dict):
        items = [(str(k), _flatten(v)) for k, v in value.items()]
    else:
        items = []
        for line in _flatten(value).splitlines():
            m = _PROFILE_LINE.match(line.strip())
            if m:
                items.append((m.group(1).strip(), m.group(2).strip()))
            elif items:  # a continuation line
                items[-1] = (items[-1][0], f"{items[-1][1]}\n{line.strip()}")
    for k, v in items:
        name = PROFILE_KEYS.get(k, k)
        if name in Profile.model_fields:
            fields[name] = v
    return Profile(**fields)


def parse_case(row: object, where: str) -> PatientCase:
    if not isinstance(row, dict):
        raise HospitalFormatError(f"{where}: a case must be an object")
    rec = row.get("medical_record", row.get("record"))
    if not isinstance(rec, dict):
        raise HospitalFormatError(f"{where}: 'medical_record' must be an object of sections")
    record: dict[str, Any] = {RECORD_KEYS.get(str(k), str(k)): _flatten(v) for k, v in rec.items()}
    record = {k: v for k, v in record.items() if k in MedicalRecord.model_fields}
    if "id" not in row:
        raise HospitalFormatError(f"{where}: a case needs an 'id'")
    diseases = row.get("diseases") or []
    if isinstance(diseases, str):
        diseases = [d for d in re.split(r"[;,，；、\n]", diseases) if d.strip()]
    dept = row.get("department") or ""
    case = PatientCase(id=str(row["id"]), department=_flatten(dept).replace("\n", ", "),
                       diseases=[str(d).strip() for d in diseases], profile=parse_profile(row.get("profile", "")),
                       record=MedicalRecord(**record))
    if not case.reference_diagnosis:
        raise HospitalFormatError(f"{where} (id {case.id}): no 诊断结果/final_diagnosis or 初步诊断/preliminary_diagnosis")
    return case


def load_hospital(path: str | Path, split: str | None = None) -> list[PatientCase]:
    """Cases from a patients.json file (or ``DIR/patients.json``, ``DIR/<split>.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / (f"{split}.json" if split else "patients.json")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such patients.json (create one with `medprog data synth hospital`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise HospitalFormatError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if isinstance(data, dict):
        data = data.get("patients", list(data.values()))
    if not isinstance(data, list):
        raise HospitalFormatError(f"{path}: expected a JSON list of cases")
    cases = [parse_case(row, f"{path}[{i}]") for i, row in enumerate(data)]
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        raise HospitalFormatError(f"{path}: case id {next(i for i in ids if ids.count(i) > 1)!r} occurs more than once")
    return cases


# ----------------------------------------------------------------------- synthetic

_DISEASES: list[dict[str, Any]] = [
    {"dx": "Community-acquired pneumonia", "dept": "Respiratory medicine",
     "lay": "I've had a bad cough with yellow phlegm and a fever for about {d} days, and it hurts when I breathe in.",
     "cc": "Cough, sputum and fever for {d} days", "past": "No chronic lung disease.",
     "exam": "Temperature 38.9 C. Crackles over the right lower chest.",
     "tests": {"Complete blood count": "WBC 14.2 x10^9/L, neutrophils 85%",
               "Chest x-ray": "Right lower lobe consolidation", "C-reactive protein": "96 mg/L"},
     "diff": "Acute bronchitis; pulmonary tuberculosis",
     "tx": "Oral amoxicillin-clavulanate for 7 days, fluids, rest."},
    {"dx": "Type 2 diabetes mellitus", "dept": "Endocrinology",
     "lay": "I'm always thirsty, I pee all the time and I've lost weight over the last {d} weeks without trying.",
     "cc": "Polydipsia, polyuria and weight loss for {d} weeks", "past": "Overweight for years; father has diabetes.",
     "exam": "BMI 31. Acanthosis nigricans on the neck.",
     "tests": {"Fasting plasma glucose": "9.8 mmol/L", "HbA1c": "8.4%", "Urinalysis": "Glucose 2+, no ketones"},
     "diff": "Type 1 diabetes mellitus; diabetes insipidus", "tx": "Metformin, diet and exercise counselling."},
    {"dx": "Acute appendicitis", "dept": "General surgery",
     "lay": "My belly started hurting around the button {d} days ago and now it's on the lower right, and I feel sick.",
     "cc": "Periumbilical pain migrating to the right lower abdomen for {d} days", "past": "Healthy.",
     "exam": "Tenderness and rebound at McBurney's point. Temperature 37.9 C.",
     "tests": {"Complete blood count": "WBC 13.1 x10^9/L", "Abdominal ultrasound": "Non-compressible appendix, 9 mm"},
     "diff": "Ovarian torsion; ureteric colic", "tx": "Laparoscopic appendectomy and antibiotics."},
    {"dx": "Iron deficiency anemia", "dept": "Hematology",
     "lay": "I've been exhausted and short of breath on the stairs for {d} weeks, and people say I look pale.",
     "cc": "Fatigue and exertional dyspnea for {d} weeks", "past": "Heavy menstrual periods.",
     "exam": "Pale conjunctivae. Koilonychia.",
     "tests": {"Complete blood count": "Hemoglobin 82 g/L, MCV 68 fL", "Serum ferritin": "6 ug/L"},
     "diff": "Thalassemia trait; anemia of chronic disease", "tx": "Oral ferrous sulfate; gynecology referral."},
    {"dx": "Essential hypertension", "dept": "Cardiology",
     "lay": "I keep getting headaches at the back of my head, for {d} weeks now, and the pharmacy machine "
            "said my pressure was high.",
     "cc": "Occipital headache for {d} weeks, raised blood pressure", "past": "Smoker, 20 cigarettes a day.",
     "exam": "Blood pressure 168/102 mmHg on both arms. No edema.",
     "tests": {"Electrocardiogram": "Left ventricular hypertrophy", "Serum creatinine": "78 umol/L",
               "Urinalysis": "No protein"},
     "diff": "Secondary hypertension; migraine", "tx": "Amlodipine, salt restriction, stop smoking."},
    {"dx": "Urinary tract infection", "dept": "Urology",
     "lay": "It burns when I pee and I have to go all the time, it started {d} days ago.",
     "cc": "Dysuria and frequency for {d} days", "past": "One similar episode last year.",
     "exam": "Suprapubic tenderness. No costovertebral angle tenderness.",
     "tests": {"Urinalysis": "Nitrite positive, leukocytes 3+", "Urine culture": "E. coli > 10^5 CFU/mL"},
     "diff": "Pyelonephritis; vaginitis", "tx": "Nitrofurantoin for 5 days."},
]
_JOBS = ["a teacher", "a bus driver", "retired", "an office worker", "a farmer", "a nurse", "a student"]
_STYLES = ["talks a lot and worries", "short answers, a bit impatient", "polite and precise",
           "vague about dates", "anxious, asks many questions"]


def synth_hospital(out: str | Path, n: int = 20, seed: int = 0, *, overwrite: bool = False) -> dict:
    """Write ``n`` seeded synthetic English cases in the AI Hospital structure to ``out``: a .json
    file, or a directory that gets ``patients.json`` (all cases) and ``train.json``, ``dev.json``,
    ``test.json`` (80/10/10). Same ``(n, seed)``, same bytes."""
    rng = random.Random(seed)
    out = Path(out)
    if out.suffix == ".json":
        parts = {out: slice(None)}
    else:
        test = max(1, n // 10)
        dev = n // 10 if n - test > n // 10 else 0
        parts = {out / "patients.json": slice(None), out / "train.json": slice(0, n - test - dev),
                 out / "dev.json": slice(n - test - dev, n - test), out / "test.json": slice(n - test, n)}
    if not overwrite and any(p.exists() for p in parts):
        raise FileExistsError(f"{out} already holds data; pass overwrite=True to replace it")
    cases = []
    for i in range(n):
        t = rng.choice(_DISEASES)
        d, age, sex = rng.randint(2, 14), rng.randint(18, 85), rng.choice(["male", "female"])
        profile = "\n".join([f"<complaint> {t['lay'].format(d=d)}", f"<sex> {sex}", f"<age> {age}",
                             f"<work_life> {rng.choice(_JOBS)}", f"<speaking_style> {rng.choice(_STYLES)}"])
        cases.append({
            "id": f"synth-{seed}-{i}", "department": t["dept"], "diseases": [t["dx"]], "profile": profile,
            "medical_record": {
                "general": f"{sex}, {age} years", "chief_complaint": t["cc"].format(d=d),
                "present_illness": f"{t['cc'].format(d=d)}. {t['lay'].format(d=d)}",
                "past_history": t["past"], "physical_exam": t["exam"], "tests": dict(t["tests"]),
                "preliminary_diagnosis": t["dx"], "basis": f"History and findings consistent with {t['dx'].lower()}.",
                "differential": t["diff"], "treatment_course": t["tx"], "final_diagnosis": t["dx"],
                "summary": f"{age}-year-old {sex} with {t['dx'].lower()}.",
            },
        })
    files = {}
    for path, part in parts.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cases[part], ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        files[str(path)] = len(cases[part])
    return {"dataset": "hospital", "out": str(out), "n": n, "seed": seed, "files": files}
