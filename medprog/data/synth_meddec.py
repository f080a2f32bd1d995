"""Seeded synthetic discharge summaries in the official MedDec layout (see `medprog.data.meddec`).

What for: offline demos, tests, and the corpus medprog's own small tagger model is trained on.
Notes are short (about 90-160 words, 4-8 gold spans) so that a tiny model can learn them on a
CPU, but keep the traits that make MedDec hard: MIMIC-style sections and de-identification
tokens (``[**Hospital1 18**]``, ``[**2118-6-2**]``), many phrasings per category with slot
fillers, spans of different categories nested in one another (a drug decision that contains
the problem it treats), and plenty of non-decision sentences that reuse the same drugs,
problems, labs and procedures, so that matching words alone is not enough.

The same ``(n, seed)`` writes byte-identical files. Layout written::

    OUT/data/<id>.json  OUT/raw_text/<id>.txt  OUT/stats.csv  OUT/splits/{train,val,test}.txt
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import shutil
from pathlib import Path

from .meddec import ANNOTATIONS_DIR, SPLITS_DIR, STATS_FILE, TEXTS_DIR, category_label

# ---------------------------------------------------------------- slot fillers

DRUGS: list[tuple[str, list[str]]] = [
    ("lisinopril", ["5 mg", "10 mg", "20 mg"]),
    ("metoprolol tartrate", ["12.5 mg", "25 mg", "50 mg"]),
    ("metoprolol succinate", ["25 mg", "50 mg", "100 mg"]),
    ("furosemide", ["20 mg", "40 mg", "80 mg"]),
    ("Lasix", ["20 mg", "40 mg"]),
    ("warfarin", ["2 mg", "5 mg", "7.5 mg"]),
    ("apixaban", ["2.5 mg", "5 mg"]),
    ("aspirin", ["81 mg", "325 mg"]),
    ("atorvastatin", ["40 mg", "80 mg"]),
    ("amlodipine", ["5 mg", "10 mg"]),
    ("insulin glargine", ["10 units", "18 units", "24 units"]),
    ("metformin", ["500 mg", "1000 mg"]),
    ("prednisone", ["10 mg", "40 mg", "60 mg"]),
    ("levofloxacin", ["500 mg", "750 mg"]),
    ("ceftriaxone", ["1 g", "2 g"]),
    ("vancomycin", ["1 g", "1250 mg"]),
    ("piperacillin-tazobactam", ["4.5 g"]),
    ("azithromycin", ["250 mg", "500 mg"]),
    ("pantoprazole", ["40 mg"]),
    ("lactulose", ["30 mL"]),
    ("rifaximin", ["550 mg"]),
    ("spironolactone", ["25 mg", "50 mg"]),
    ("diltiazem", ["30 mg", "120 mg"]),
    ("amiodarone", ["200 mg", "400 mg"]),
    ("clopidogrel", ["75 mg"]),
    ("levothyroxine", ["50 mcg", "75 mcg"]),
    ("gabapentin", ["100 mg", "300 mg"]),
    ("oxycodone", ["5 mg"]),
    ("acetaminophen", ["650 mg", "1 g"]),
    ("potassium chloride", ["20 mEq", "40 mEq"]),
    ("heparin", ["5000 units"]),
    ("tamsulosin", ["0.4 mg"]),
]
ANTIBIOTICS = ["levofloxacin", "ceftriaxone", "vancomycin", "azithromycin", "cefpodoxime",
               "piperacillin-tazobactam", "ciprofloxacin", "Bactrim", "metronidazole", "cephalexin"]
FREQS = ["daily", "twice daily", "BID", "TID", "q8h", "at bedtime", "every other day", "once daily"]
PROBLEMS = [
    "pneumonia", "community acquired pneumonia", "urinary tract infection", "CHF exacerbation",
    "acute on chronic systolic heart failure", "COPD exacerbation", "atrial fibrillation with RVR",
    "acute kidney injury", "upper GI bleed", "lower GI bleed", "hepatic encephalopathy", "cellulitis",
    "urosepsis", "diabetic ketoacidosis", "hyperkalemia", "hyponatremia", "pulmonary embolism",
    "deep vein thrombosis", "NSTEMI", "hypertensive urgency", "syncope", "delirium", "C. diff colitis",
    "gallstone pancreatitis", "acute cholecystitis", "anemia", "small bowel obstruction",
    "alcohol withdrawal", "aspiration pneumonia", "pyelonephritis",
]
HISTORY = ["CAD", "hypertension", "type 2 diabetes", "COPD", "CKD stage III", "cirrhosis", "atrial fibrillation",
           "CHF", "hyperlipidemia", "hypothyroidism", "prior stroke", "breast cancer", "BPH", "asthma"]
CAUSES = ["volume overload", "dietary indiscretion", "medication nonadherence", "dehydration", "poor oral intake",
          "an underlying infection", "NSAID use", "alcohol use", "a urinary source", "a viral illness"]
PROCEDURES = [
    "cardiac catheterization with a drug eluting stent to the LAD", "EGD with clipping of a duodenal ulcer",
    "colonoscopy", "thoracentesis", "paracentesis", "ERCP with sphincterotomy", "laparoscopic cholecystectomy",
    "TIPS placement", "bronchoscopy", "IR guided drainage of the abscess", "PEG tube placement",
    "pacemaker placement", "DC cardioversion", "tunneled dialysis line placement", "incision and drainage",
]
IMAGING = ["chest x-ray", "CXR", "CT of the chest", "CT abdomen and pelvis", "CT head", "RUQ ultrasound",
           "renal ultrasound", "lower extremity Doppler study", "TTE", "MRI of the brain", "CTA chest", "KUB"]
LABS = ["lactate", "troponin", "BNP", "hemoglobin", "hematocrit", "creatinine", "potassium", "sodium", "INR",
        "lipase", "TSH", "hemoglobin A1c", "white count", "ammonia", "LFTs", "CK"]
LAB_VALUES = ["1.2", "1.8", "2.4", "3.1", "4.6", "5.9", "7.2", "9.8", "11.4", "128", "131", "146"]
NEG_FINDINGS = ["no acute intracranial process", "no evidence of pneumonia", "no pericardial effusion",
                "no DVT", "no acute cardiopulmonary process", "a normal ejection fraction", "no hydronephrosis",
                "stable appearance of the nodule", "no free air"]
POS_FINDINGS = ["a right lower lobe consolidation", "a moderate left pleural effusion", "pulmonary edema",
                "a segmental pulmonary embolus", "bilateral pleural effusions", "gallbladder wall thickening",
                "dilated loops of small bowel", "an occlusive DVT in the left popliteal vein", "a new LLL infiltrate"]
ORGANISMS = ["E. coli", "Klebsiella", "MRSA", "Enterococcus", "Pseudomonas", "MSSA", "Proteus"]
SYMPTOMS = ["chest pain", "shortness of breath", "fevers", "abdominal pain", "nausea and vomiting",
            "lightheadedness", "black stools", "leg swelling", "confusion", "palpitations", "dysuria", "cough"]
UNITS = ["MICU", "CCU", "SICU", "medicine floor", "cardiology service", "step down unit", "Trauma ICU"]
CONSULTS = ["Cardiology", "GI", "Nephrology", "Infectious Disease", "Renal", "Hepatology", "Surgery",
            "Pulmonary", "Social work", "Palliative care", "Neurology", "Endocrine"]
SPECIALISTS = ["cardiologist", "gastroenterologist", "nephrologist", "hepatologist", "pulmonologist",
               "oncologist", "PCP", "surgeon", "endocrinologist"]
FACILITIES = ["[**Hospital 1474**] rehab", "an extended care facility", "[**Location (un) 620**] nursing home",
              "acute rehab", "[**Hospital3 2558**]"]
SERVICES = ["MEDICINE", "CARDIOLOGY", "SURGERY", "NEUROLOGY", "MEDICINE", "MEDICINE"]
INTERPRETER = ["Spanish", "Russian", "Portuguese", "Cantonese", "Haitian Creole", "Vietnamese"]
RELATIONS = ["his wife", "her husband", "his daughter", "her son", "her sister"]

# ---------------------------------------------------------------- templates
# <N>...</N> marks a category-N span (spans may nest); {slot} is filled, {Slot} capitalised.
# Each entry is "SECTIONS|sentence", sections: H(PI), C(ourse), I(nstructions), F(ollow-up).

DECISION_TEMPLATES: dict[int, list[str]] = {
    1: [
        "H|{Pron} was <1>transferred to {hosp} for further management</1>.",
        "HC|<1>Admitted to the {unit}</1> for closer monitoring.",
        "C|<1>{Consult} was consulted</1> and followed during the admission.",
        "C|{Pron} was <1>called out to the floor</1> on hospital day {n}.",
        "C|<1>Discharged home with VNA services</1>.",
        "C|<1>Discharged to {facility}</1> for rehabilitation.",
        "F|<1>Follow up with Dr. {name} in {k} weeks</1>.",
        "H|<1>Seen by {consult} in the ED</1>.",
        "C|<1>Physical therapy evaluated {obj}</1> prior to discharge.",
        "F|<1>Please call {tel} to schedule an appointment with your {specialist}</1>.",
        "F|<1>You have an appointment with Dr. {name} on {date}</1>.",
    ],
    2: [
        "HC|<2>Blood cultures were sent</2>.",
        "HC|<2>A {imaging} was obtained</2>.",
        "HC|<2>{Lab} was checked</2> on admission.",
        "H|In the ED, <2>a {imaging} was performed</2>.",
        "C|<2>Sent {lab} and {lab2}</2>.",
        "C|<2>Serial troponins were drawn</2>.",
        "C|<2>An echocardiogram was ordered</2> to assess {poss} function.",
        "C|<2>{Imaging} was done to evaluate for <3>{problem}</3></2>.",
        "C|<2>Stool studies were sent for C. diff</2>.",
        "C|{Pron} was <2>monitored on telemetry</2> overnight.",
        "C|<2>Repeat {lab} was drawn</2> in the morning.",
    ],
    3: [
        "HC|{Pron} was found to have <3>{problem}</3>.",
        "C|<3>{Problem}, likely secondary to {cause}</3>.",
        "HC|Diagnosed with <3>{problem}</3>.",
        "C|Presentation was thought to be due to <3>{problem}</3>.",
        "C|<3>{Problem} was ruled out</3>.",
        "H|Concern for <3>{problem}</3> on arrival.",
        "C|Clinical picture was consistent with <3>{problem}</3>.",
        "C|Etiology was felt to be <3>{cause}</3>.",
        "I|You were treated for <3>{problem}</3>.",
    ],
    4: [
        "C|<4>Goal INR 2-3</4>.",
        "C|<4>Target SBP less than {sbp}</4>.",
        "C|{Pron} was diuresed <4>with a goal of {k} liters negative daily</4>.",
        "C|<4>Goal oxygen saturation above {sat}%</4>.",
        "C|<4>Aim for euvolemia</4> prior to discharge.",
        "C|<4>Goal heart rate under {hr}</4>.",
        "C|<4>Keep potassium above 4.0 and magnesium above 2.0</4>.",
        "C|Pressors were <4>titrated to a goal MAP greater than 65</4>.",
        "I|Your <4>goal weight is {weight} lbs</4>.",
        "C|<4>Target HbA1c below 7%</4>.",
    ],
    5: [
        "HC|<5>Started on {drug} {dose} {freq}</5>.",
        "C|<5>{Drug} was discontinued</5> given <3>{problem}</3>.",
        "C|<5>Started {drug} {dose} for <3>{problem}</3></5>.",
        "C|<5>Increased {drug} to {dose} {freq}</5>.",
        "C|<5>{Drug} was held</5> in the setting of <3>{problem}</3>.",
        "C|<5>Switched from {drug} to {drug2}</5>.",
        "CI|<5>Continue {drug} {dose} {freq}</5>.",
        "C|<5>Treated with a {k} day course of {abx}</5>.",
        "H|<5>Received {drug} {dose} IV</5> in the ED.",
        "I|Please <5>stop taking {drug}</5>.",
        "C|<5>Decreased {drug} to {dose}</5> due to <3>{problem}</3>.",
        "I|<5>Start taking {drug} {dose} {freq}</5>.",
    ],
    6: [
        "C|<6>Underwent {procedure}</6> on {date}.",
        "C|<6>{Procedure} was performed</6> without complication.",
        "HC|<6>Intubated for airway protection</6>.",
        "C|<6>Transfused {k} units PRBC</6>.",
        "C|<6>Underwent {procedure} for <3>{problem}</3></6>.",
        "HC|<6>Placed on BiPAP</6> with improvement.",
        "C|<6>Received hemodialysis</6> on hospital day {n}.",
        "C|<6>A PICC line was placed</6> for IV antibiotics.",
        "C|{Pron} was <6>extubated</6> on {date}.",
        "C|<6>Paracentesis removed {k} liters</6> of ascites.",
    ],
    7: [
        "HC|<7>{Imaging} showed {neg_finding}</7>.",
        "C|<7>Cultures remained negative</7>.",
        "C|<7>Troponins were negative x3</7>.",
        "C|<7>Creatinine improved to {val}</7> with hydration.",
        "C|<7>TTE revealed an EF of {ef}%</7>.",
        "C|<7>{Lab} was within normal limits</7>.",
        "C|<7>{Lab} trended down</7> prior to discharge.",
        "C|<7>Urine culture grew {organism}</7>.",
        "HC|<7>{Imaging} showed <3>{pos_finding}</3></7>.",
        "H|Labs were notable for <7>{lab} of {val}</7>.",
    ],
    8: [
        "F|<8>Colonoscopy to be scheduled as an outpatient</8>.",
        "CF|<8>Further workup deferred to {poss} PCP</8>.",
        "F|<8>Biopsy results were pending at discharge</8>.",
        "CF|<8>Consider repeat {imaging} in {k} months</8>.",
        "C|<8>Decision regarding {procedure} deferred to outpatient {specialist}</8>.",
        "F|<8>Will readdress {drug} dosing at follow up</8>.",
        "FI|<8>Please have your {lab} checked in {k} days</8>.",
        "F|<8>Follow up the final read of the {imaging}</8>.",
        "CF|<8>Outpatient sleep study was recommended</8>.",
    ],
    9: [
        "I|<9>Return to the ED if you experience {symptom}</9>.",
        "I|<9>Avoid heavy lifting for {k} weeks</9>.",
        "I|<9>Follow a low sodium diet</9>.",
        "I|<9>Weigh yourself every morning</9>.",
        "I|<9>Do not drive while taking {drug}</9>.",
        "I|<9>Call your doctor for fever greater than 101</9>.",
        "I|<9>Keep the incision clean and dry</9>.",
        "I|<9>Limit fluid intake to 2 liters per day</9>.",
        "I|<9>Do not take NSAIDs</9> such as ibuprofen.",
        "I|<9>Please stop smoking</9>.",
    ],
    10: ["F|<10>Health care proxy is {relation}</10>."],
    11: ["CF|<11>Code status was confirmed as full code</11>."],
}

# Non-decision sentences that reuse the decision vocabulary.
FILLERS: dict[str, list[str]] = {
    "H": [
        "{Pron} takes {drug} at home.",
        "{Pron} reports {symptom} for {k} days.",
        "Denies fevers, chills, or {symptom}.",
        "Prior {imaging} at {hosp} was reportedly unremarkable.",
        "{Pron} had a {procedure} in {year}.",
        "Family history of {problem}.",
        "Recent admission for {problem} in {year}.",
        "{Pron} was recently seen by {poss} {specialist}.",
        "{Pron} was told to follow a low sodium diet in the past but has not adhered.",
        "Per family, {poss} home {drug} was held for {k} days before admission.",
    ],
    "C": [
        "{Pron} remained hemodynamically stable.",
        "Pain was well controlled.",
        "{Drug} allergy was noted on admission.",
        "{Pron} tolerated a regular diet.",
        "{Lab} values were reviewed with the patient.",
        "{Poss} home {drug} was reviewed.",
        "The {consult} team signed off.",
        "{Pron} ambulated with a walker.",
        "Prior {imaging} was reviewed for comparison.",
        "{Pron} has a history of {problem}.",
    ],
    "I": [
        "It was a pleasure taking care of you at {hosp}.",
        "You were admitted with {symptom}.",
        "Your medications are listed below.",
        "You were seen by the {consult} team.",
        "Your {lab} was reviewed before discharge.",
    ],
    "F": [
        "{Specialist} office: {tel}.",
        "Dr. {name} will receive a copy of this summary.",
    ],
}

SECTION_CATEGORY_WEIGHTS: dict[str, dict[int, float]] = {
    "H": {1: 1.0, 2: 1.0, 3: 1.2, 5: 0.6, 6: 0.4, 7: 1.0},
    "C": {1: 0.7, 2: 1.0, 3: 1.1, 4: 0.8, 5: 1.4, 6: 1.0, 7: 1.1, 8: 0.3},
    "I": {3: 0.3, 4: 0.4, 5: 0.6, 8: 0.3, 9: 1.6},
    "F": {1: 1.0, 8: 1.0},
}

MIN_WORDS, MAX_WORDS = 90, 160
MIN_SPANS, MAX_SPANS = 4, 8

_SLOT_RE = re.compile(r"\{(\w+)\}")
_TAG_RE = re.compile(r"<(/?)(\d+)>")


def _deid_name(rng: random.Random) -> str:
    return rng.choice([
        f"[**Last Name (STitle) {rng.randint(100, 9999)}**]",
        f"[**First Name8 (NamePattern2) {rng.randint(100, 9999)}**] [**Last Name (NamePattern1) {rng.randint(100, 9999)}**]",
        f"[**Name (NI) {rng.randint(100, 9999)}**]",
    ])


def _deid_date(rng: random.Random, year: int) -> str:
    return f"[**{year}-{rng.randint(1, 12)}-{rng.randint(1, 28)}**]"


class _Note:
    """Per-note context: fixed patient facts plus slot sampling."""

    def __init__(self, rng: random.Random, female: bool, year: int):
        self.rng = rng
        self.female = female
        self.year = year
        self.hosp = rng.choice(["[**Hospital1 18**]", "[**Hospital1 18**]", "[**Hospital 1474**]", "[**Hospital3 4107**]"])

    def slot(self, name: str, sentence: dict[str, str]) -> str:
        r = self.rng
        if name in sentence:
            return sentence[name]
        if name == "drug" or name == "drug2":
            drug, doses = r.choice(DRUGS)
            if name == "drug2":
                while drug == sentence.get("drug"):
                    drug, doses = r.choice(DRUGS)
            sentence["dose"] = r.choice(doses)
            value = drug
        elif name == "dose":
            value = r.choice(r.choice(DRUGS)[1])
        elif name == "lab2":
            value = r.choice([x for x in LABS if x != sentence.get("lab")])
        else:
            table = {
                "pron": "she" if self.female else "he", "poss": "her" if self.female else "his",
                "obj": "her" if self.female else "him", "hosp": self.hosp,
            }
            if name in table:
                value = table[name]
            else:
                value = {
                    "freq": lambda: r.choice(FREQS), "abx": lambda: r.choice(ANTIBIOTICS),
                    "problem": lambda: r.choice(PROBLEMS), "cause": lambda: r.choice(CAUSES),
                    "procedure": lambda: r.choice(PROCEDURES), "imaging": lambda: r.choice(IMAGING),
                    "lab": lambda: r.choice(LABS), "val": lambda: r.choice(LAB_VALUES),
                    "neg_finding": lambda: r.choice(NEG_FINDINGS), "pos_finding": lambda: r.choice(POS_FINDINGS),
                    "organism": lambda: r.choice(ORGANISMS), "symptom": lambda: r.choice(SYMPTOMS),
                    "unit": lambda: r.choice(UNITS), "consult": lambda: r.choice(CONSULTS),
                    "specialist": lambda: r.choice(SPECIALISTS), "facility": lambda: r.choice(FACILITIES),
                    "relation": lambda: r.choice(RELATIONS), "name": lambda: _deid_name(r),
                    "date": lambda: _deid_date(r, self.year), "year": lambda: f"[**{self.year - r.randint(1, 9)}**]",
                    "tel": lambda: f"[**Telephone/Fax (1) {r.randint(100, 9999)}**]",
                    "k": lambda: str(r.randint(2, 6)), "n": lambda: str(r.randint(2, 5)),
                    "sbp": lambda: r.choice(["140", "160", "130"]), "sat": lambda: r.choice(["88", "90", "92"]),
                    "hr": lambda: r.choice(["100", "110", "90"]), "weight": lambda: str(r.randint(120, 240)),
                    "ef": lambda: str(r.choice([20, 25, 30, 35, 40, 55, 60])),
                }[name]()
        sentence[name] = value
        return value

    def fill(self, template: str) -> str:
        sentence: dict[str, str] = {}

        def sub(m: re.Match) -> str:
            name = m.group(1)
            value = self.slot(name.lower(), sentence)
            return value[:1].upper() + value[1:] if name[:1].isupper() else value

        return _SLOT_RE.sub(sub, template)


def _strip_tags(tagged: str) -> tuple[str, list[tuple[int, int, int]]]:
    """Remove ``<N>``/``</N>`` marks; return the plain text and its (start, end, category) spans."""
    out: list[str] = []
    pos = 0
    last = 0
    open_at: dict[int, int] = {}
    spans = []
    for m in _TAG_RE.finditer(tagged):
        piece = tagged[last:m.start()]
        out.append(piece)
        pos += len(piece)
        last = m.end()
        cat = int(m.group(2))
        if m.group(1):
            spans.append((open_at.pop(cat), pos, cat))
        else:
            open_at[cat] = pos
    out.append(tagged[last:])
    assert not open_at, tagged
    return "".join(out), spans


def _pick_category(rng: random.Random, section: str) -> int:
    weights = SECTION_CATEGORY_WEIGHTS[section]
    cats = list(weights)
    return rng.choices(cats, weights=[weights[c] for c in cats])[0]


def _decision_sentence(note: _Note, section: str, cat: int) -> str:
    options = [t.split("|", 1)[1] for t in DECISION_TEMPLATES[cat] if section in t.split("|", 1)[0]]
    return note.fill(note.rng.choice(options))


def _filler(note: _Note, section: str, used: set[str]) -> str:
    """A non-decision sentence, not repeating one the note already has."""
    for _ in range(10):
        sentence = note.fill(note.rng.choice(FILLERS[section]))
        if sentence not in used:
            break
    used.add(sentence)
    return sentence


def _compose(note: _Note, age: int, sex: str, interpreter: str | None) -> str:
    """One tagged note: header, HPI, hospital course, medications, instructions, follow-up."""
    r = note.rng
    adm_month, adm_day = r.randint(1, 12), r.randint(1, 20)
    header = (
        f"Admission Date:  [**{note.year}-{adm_month}-{adm_day}**]     "
        f"Discharge Date:  [**{note.year}-{adm_month}-{adm_day + r.randint(2, 8)}**]\n\n"
        f"Sex:   {sex}\nService: {r.choice(SERVICES)}\n\n"
    )
    hist = r.sample(HISTORY, 2)
    opener = (
        f"{age} yo {'F' if note.female else 'M'} with a history of {hist[0]} and {hist[1]} "
        f"who presented with {r.choice(SYMPTOMS)}."
    )
    plan = {"H": r.randint(1, 2), "C": r.randint(2, 4), "I": r.randint(1, 2), "F": r.randint(0, 1)}
    n_fill = {"H": r.randint(0, 2), "C": r.randint(1, 3), "I": r.randint(0, 1), "F": r.randint(0, 1)}
    sections: dict[str, list[str]] = {}
    used: set[str] = set()
    for sec in ("H", "C", "I", "F"):
        sentences = [_decision_sentence(note, sec, _pick_category(r, sec)) for _ in range(plan[sec])]
        for _ in range(n_fill[sec]):
            sentences.insert(r.randint(0, len(sentences)), _filler(note, sec, used))
        sections[sec] = sentences
    if interpreter:
        sections["H"].insert(0, f"History was obtained with the help of a {interpreter} interpreter.")
    if r.random() < 0.05:
        sections["F"].append(_decision_sentence(note, "F", r.choice([10, 11])))
    meds = []
    for i in range(r.randint(2, 3)):
        drug, doses = r.choice(DRUGS)
        meds.append(f"{i + 1}. {drug[:1].upper() + drug[1:]} {r.choice(doses)} PO {r.choice(FREQS)}")
    body = (
        "History of Present Illness:\n" + " ".join([opener] + sections["H"]) + "\n\n"
        + "Hospital Course:\n" + " ".join(sections["C"]) + "\n\n"
        + "Discharge Medications:\n" + "\n".join(meds) + "\n\n"
        + "Discharge Instructions:\n" + " ".join(sections["I"]) + "\n"
    )
    if sections["F"]:
        body += "\nFollowup Instructions:\n" + " ".join(sections["F"]) + "\n"
    return header + body


ETHNICITIES = [
    ("W", 40), ("WHITE", 10), ("WHITE - RUSSIAN", 3), ("AA", 10), ("BLACK/AFRICAN AMERICAN", 5),
    ("Hisp.", 7), ("HISPANIC OR LATINO", 3), ("Asian", 5), ("ASIAN - CHINESE", 3), ("OTHER", 4),
    ("UNKNOWN/NOT SPECIFIED", 5), ("NH", 2), ("UNABLE TO OBTAIN", 3),
]
LANGUAGES = [("ENGL", 78), ("Non-ENGL", 14), ("SPAN", 4), ("RUSS", 2), ("", 2)]


def synth_meddec(out_dir: str | Path, n: int = 500, seed: int = 0, *, overwrite: bool = False) -> dict:
    """Write ``n`` synthetic annotated notes to ``out_dir`` in the MedDec layout; return a summary.

    Splits are 80/10/10 (train/val/test) over a seeded shuffle. Refuses to write into a folder
    that already holds MedDec notes unless ``overwrite`` (which first removes ``data/``,
    ``raw_text/``, ``splits/`` and ``stats.csv`` there).
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    out = Path(out_dir)
    existing = [out / ANNOTATIONS_DIR, out / TEXTS_DIR, out / SPLITS_DIR, out / STATS_FILE]
    if any(p.exists() for p in existing):
        if not overwrite:
            raise FileExistsError(f"{out} already holds MedDec data; pass overwrite=True to replace it")
        for p in existing:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    for sub in (ANNOTATIONS_DIR, TEXTS_DIR, SPLITS_DIR):
        (out / sub).mkdir(parents=True, exist_ok=True)

    rng = random.Random(seed)
    used_subjects: set[int] = set()
    rows = []
    ids = []
    n_spans = 0
    for _ in range(n):
        subject = rng.randint(100, 99999)
        while subject in used_subjects:
            subject = rng.randint(100, 99999)
        used_subjects.add(subject)
        hadm, row = rng.randint(100000, 199999), rng.randint(1, 60000)
        note_id = f"{subject}_{hadm}_{row}"
        female = rng.random() < 0.5
        ethnicity = rng.choices([e for e, _ in ETHNICITIES], weights=[w for _, w in ETHNICITIES])[0]
        language = rng.choices([x for x, _ in LANGUAGES], weights=[w for _, w in LANGUAGES])[0]
        interpreter = rng.choice(INTERPRETER) if language not in ("ENGL", "") and rng.random() < 0.5 else None
        age = rng.randint(22, 94)
        note_rng = random.Random(rng.getrandbits(64))
        for _attempt in range(200):
            note = _Note(note_rng, female, note_rng.randint(2105, 2190))
            text, spans = _strip_tags(_compose(note, age, "F" if female else "M", interpreter))
            scored = [s for s in spans if s[2] <= 9]
            if MIN_WORDS <= len(text.split()) <= MAX_WORDS and MIN_SPANS <= len(scored) <= MAX_SPANS:
                break
        else:  # pragma: no cover - the template sizes make this unreachable in practice
            raise RuntimeError("could not compose a note within the size limits")
        spans.sort()
        annotations = [
            {
                "annotation_id": f"T{k + 1}",
                "start_offset": s,
                "end_offset": e,
                "category": category_label(c),
                "decision": text[s:e],
            }
            for k, (s, e, c) in enumerate(spans)
        ]
        n_spans += len(annotations)
        (out / TEXTS_DIR / f"{note_id}.txt").write_text(text, encoding="utf-8", newline="\n")
        (out / ANNOTATIONS_DIR / f"{note_id}.json").write_text(
            json.dumps({"discharge_summary_id": note_id, "annotations": annotations}, indent=2) + "\n",
            encoding="utf-8", newline="\n",
        )
        rows.append((subject, hadm, row, ethnicity, language, "F" if female else "M"))
        ids.append(note_id)

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["SUBJECT_ID", "HADM_ID", "ROW_ID", "ETHNICITY", "LANGUAGE", "GENDER"])
    writer.writerows(rows)
    (out / STATS_FILE).write_text(buf.getvalue(), encoding="utf-8", newline="\n")

    order = ids[:]
    rng.shuffle(order)
    n_train = round(0.8 * n)
    n_val = round(0.1 * n)
    splits = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    for name, members in splits.items():
        (out / SPLITS_DIR / f"{name}.txt").write_text("".join(i + "\n" for i in members), encoding="utf-8", newline="\n")
    return {"out_dir": str(out), "notes": n, "annotations": n_spans, "splits": {k: len(v) for k, v in splits.items()}}
